package integration

import (
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// trgKeyPart is the connection store's key encoding (caddymodule
// storageKeyPart, plain form), to seed a stored connection.
func trgKeyPart(id string) string {
	return "b" + base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding).EncodeToString([]byte(id))
}

// A sidecar process killed while the partner holds its POST: Zapier's
// lease runs out and the other sidecar, sharing the storage, delivers the
// message again under the same webhook-id, flagged possible_duplicate, and
// acknowledges it once.
func TestTriggerSidecarKilledMidDelivery(t *testing.T) {
	var offset atomic.Int64 // the fake's clock, ahead of real time
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }

	wh, err := standardwebhooks.NewWebhook(trgEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	type post struct{ from, id string }
	var mu sync.Mutex
	var posts []post
	first, release := make(chan post, 1), make(chan struct{})
	acceptedCh := make(chan post, 1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var v map[string]any
		_ = json.Unmarshal(body, &v)
		if v["type"] != "trigger.event" {
			return // connection events and the like
		}
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("the reference library refused a delivery: %v", err)
		}
		p := post{from: r.URL.Query().Get("from"), id: r.Header.Get("webhook-id")}
		mu.Lock()
		posts = append(posts, p)
		n := len(posts)
		mu.Unlock()
		if n == 1 {
			first <- p
			<-release // hold the first sidecar's POST until it is killed
			return
		}
		if v["possible_duplicate"] != true {
			t.Errorf("the redelivery is not flagged possible_duplicate: %v", v)
		}
		w.WriteHeader(http.StatusOK)
		select {
		case acceptedCh <- p:
		default:
		}
	}))
	t.Cleanup(recv.Close)
	t.Cleanup(func() { close(release) }) // before recv.Close, which waits for the held POST

	// Each sidecar names itself in deliver_to by its own XDG_DATA_HOME.
	site := fmt.Sprintf(`
	handle_path /zapier/triggers/* {
		zapier_triggers {
			app %s %s
			deliver_to "%s/events?from={env.XDG_DATA_HOME}"
			signing_secret %s
			events_stream off
			drain_interval 200ms
			delivery_timeout 30s
			attempts 1
			lease_limit 1
		}
	}
`, actApp, actAppUUID, recv.URL, trgEventsSecret)
	f := startFleet(t, fleetOptions{n: 2, siteExtra: site, fake: fakezapier.Config{Now: now}})

	// A connection stored as zapier_connect would have.
	conn := f.fake.AddConnection("org", "alice", actAppUUID, "Slack")
	dir := filepath.Join(f.storage, "zapier", "connections", trgKeyPart("org"), trgKeyPart("alice"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"connection_id": conn, "app": actApp, "app_uuid": actAppUUID,
		"created": time.Now().UTC(), "last_verified": time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(dir, trgKeyPart(actAppUUID)), rec, 0o600); err != nil {
		t.Fatal(err)
	}
	status, _, body, err := send(request{method: http.MethodPut, path: "/zapier/triggers/subscriptions/s1", base: f.sidecars[0].port,
		tenant: "org", user: "alice", body: trgSub, header: http.Header{"Content-Type": {"application/json"}}})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("PUT: %d %s %v", status, body, err)
	}
	sub := trgDecode(t, body)
	msgID := f.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"text": "once"})

	// One sidecar leases it and POSTs; kill that one mid-POST.
	var p1 post
	select {
	case p1 = <-first:
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("no sidecar delivered the message")
	}
	var killed *sidecar
	for _, s := range f.sidecars {
		for _, kv := range s.proc.cmd.Env {
			if kv == "XDG_DATA_HOME="+p1.from {
				killed = s
			}
		}
	}
	if killed == nil || p1.id != msgID {
		t.Fatalf("first POST %+v from an unknown sidecar", p1)
	}
	_ = killed.proc.cmd.Process.Kill()
	_ = killed.proc.cmd.Wait()

	// The lease (lease_limit × attempts × (delivery_timeout + retry_max) + 30s) runs out.
	offset.Add(int64(2 * time.Minute))
	var p2 post
	select {
	case p2 = <-acceptedCh:
	case <-time.After(60 * time.Second): // a hang guard: the dead sidecar's drain lock expires 10s after its last renewal
		for _, s := range f.sidecars {
			if s != killed {
				_, _, b, _ := send(request{path: "/zapier/triggers/subscriptions/s1", base: s.port, tenant: "org", user: "alice"})
				_, m := s.admin(http.MethodGet, "/metrics")
				var lines []string
				for _, l := range strings.Split(string(m), "\n") {
					if strings.HasPrefix(l, "caddy_zapier_trigger") {
						lines = append(lines, l)
					}
				}
				t.Logf("survivor: %s\n%s", b, strings.Join(lines, "\n"))
			}
		}
		t.Logf("fake: %+v %+v", f.fake.InboxMessages(sub.InboxID), f.fake.InboxStats())
		t.Fatal("the surviving sidecar did not redeliver the message")
	}
	if p2.id != msgID || p2.from == p1.from {
		t.Fatalf("redelivery %+v after %+v", p2, p1)
	}
	eventually(t, 10*time.Second, "the message acked once", func() bool {
		msgs := f.fake.InboxMessages(sub.InboxID)
		return len(msgs) == 1 && msgs[0].Status == "acked" && msgs[0].Acks == 1
	})
	if m := f.fake.InboxMessages(sub.InboxID)[0]; m.LeaseCount != 2 {
		t.Errorf("lease count %d, want 2", m.LeaseCount)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range posts {
		if !strings.EqualFold(p.id, msgID) {
			t.Errorf("a POST for another message: %+v", p)
		}
	}
}
