use standardwebhooks::{Webhook, WebhookError};

/// Checks a delivery from the raw request body and its headers. An error
/// means it is forged, altered or more than 5 minutes old: answer 400 and do
/// nothing else.
pub fn verify(secret: &str, body: &[u8], headers: &http::HeaderMap) -> Result<(), WebhookError> {
    let webhook = Webhook::new(secret)?; // whsec_…
    webhook.verify(body, headers)
}
