package receiver

import (
	"io"
	"net/http"
	"os"

	standardwebhooks "github.com/standard-webhooks/libraries/go"
)

var webhook, _ = standardwebhooks.NewWebhook(os.Getenv("HERALD_WEBHOOK_SECRET")) // whsec_…

// Handle checks a delivery before anything else: a forged, altered or
// more than 5 minutes old delivery gets a 400 and nothing more.
func Handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || webhook.Verify(body, r.Header) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
