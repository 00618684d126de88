import { Webhook } from "standardwebhooks";

const webhook = new Webhook(process.env.HERALD_WEBHOOK_SECRET); // whsec_…

// The event of a delivery, from the raw request body (a string) and its
// headers. Throws when the delivery is forged, altered or more than 5 minutes
// old: answer 400 and do nothing else.
export function handle(body, headers) {
  return webhook.verify(body, headers);
}
