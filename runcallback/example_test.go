package runcallback_test

import (
	"errors"
	"io"
	"log"
	"net/http"

	"github.com/zapgate/caddy-zapier/runcallback"
)

// A callback endpoint: 401 for a bad signature (Zapier does not retry 4xx),
// 503 when the keys cannot be fetched (Zapier retries 5xx), 400 for a bad
// body, 2xx once the run is handed off.
func Example() {
	v, err := runcallback.NewVerifier(runcallback.VerifierConfig{
		JWKSURL: "https://zapier.example/callback-jwks.json", // not documented by Zapier: configure it
	})
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("POST /zapier/callbacks", func(w http.ResponseWriter, r *http.Request) {
		claims, err := v.Verify(r.Context(), r.Header.Get(runcallback.SignatureHeader))
		switch {
		case errors.Is(err, runcallback.ErrKeysUnavailable):
			http.Error(w, "signing keys unavailable", http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, runcallback.MaxDeliveryBytes))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		d, err := runcallback.ParseDelivery(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !runcallback.BindsRun(claims, d.RunID) {
			http.Error(w, "signature is for another run", http.StatusUnauthorized)
			return
		}
		// De-duplicate on d.RunID, enqueue, answer fast.
		w.WriteHeader(http.StatusNoContent)
	})
}
