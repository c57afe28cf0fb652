package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// Twenty concurrent copies of one signed connection webhook, spread over
// two sidecars sharing the storage, reach the partner exactly once: the
// webhook-id is claimed atomically before anything is forwarded.
func TestConnectionWebhookCopiesAcrossSidecarsForwardedOnce(t *testing.T) {
	var mu sync.Mutex
	forwarded := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var v map[string]any
		_ = json.Unmarshal(body, &v)
		if v["type"] == "connection.expiring" {
			mu.Lock()
			forwarded[r.Header.Get("webhook-id")]++
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/connect/callback", sidecarPort(0))
	site := fmt.Sprintf(`
	handle_path /zapier/connect/* {
		zapier_connect {
			app %[1]s %[2]s
		}
	}
	handle_path /zapier/triggers/* {
		zapier_triggers {
			app %[1]s %[2]s
			deliver_to %[3]s/events
			signing_secret %[4]s
			connection_webhook_secret %[5]s
			events_stream off
			drain_interval 1h
		}
	}
`, slackApp, slackUUID, recv.URL, trgEventsSecret, trgConnSecret)
	f := startFleet(t, fleetOptions{n: 2, siteExtra: site,
		zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s", callback, partnerOrigin)})
	f.fake.RegisterPartner(partnerOrigin, callback)
	f.fake.RegisterApp(slackApp, slackUUID)
	_, stored := newFleetBrowser(t, "org", "alice").connectPopup(f.sidecars[0], f.sidecars[1])
	conn := stored.ConnectionID

	id, ts := "msg_copies_once", time.Now()
	expiry := fakezapier.ConnectionExpiryBody(conn, slackUUID, ts.Add(72*time.Hour))
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := f.sidecars[i%2]
			st, _, err := f.fake.SendConnectionWebhook(fakezapier.ConnectionWebhook{
				URL: fmt.Sprintf("http://127.0.0.1:%d/zapier/triggers/connection-webhooks", s.port), Secret: trgConnSecret,
				ID: id, Timestamp: ts, Body: expiry})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			statuses[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if forwarded[id] != 1 || len(forwarded) != 1 {
		t.Fatalf("forwarded %v, want %s once (answers %v)", forwarded, id, statuses)
	}
	// Every copy is acknowledged, or told another copy is in flight.
	if statuses[http.StatusOK]+statuses[http.StatusConflict] != 20 || statuses[http.StatusOK] == 0 {
		t.Fatalf("answers %v", statuses)
	}
}
