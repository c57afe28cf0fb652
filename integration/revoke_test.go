package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// A leaked signing key is revoked on one sidecar: it leaves that sidecar's
// JWKS in the same call and every other sidecar's within key_sync, and every
// access token cached before is dropped, so the next request of each
// identity exchanges a JWT signed by the new key. The second revocation goes
// through `caddy zapier keys revoke` against the other sidecar.
func TestRevokeRemovesALeakedKeyEverywhereAndPurgesTokens(t *testing.T) {
	f := startFleet(t, fleetOptions{n: 2, zapierExtra: "key_rotation 0\n\t\tkey_overlap 1h\n\t\tkey_sync 1s"})
	s0, s1 := f.sidecars[0], f.sidecars[1]
	leaked := s0.kids()
	if len(leaked) != 1 {
		t.Fatalf("published %v, want one key", leaked)
	}
	before := map[string]string{}
	for _, s := range f.sidecars {
		before[s.name] = s.echoAs("revoke", s.name).header("Authorization")
		if again := s.echoAs("revoke", s.name).header("Authorization"); again != before[s.name] {
			t.Fatalf("%s: token not cached", s.name)
		}
	}

	status, body := s0.admin(http.MethodPost, "/zapier/keys/revoke?kid="+leaked[0])
	if status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	var res struct {
		Revoked string `json:"revoked"`
		Active  struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"active"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if res.Revoked != leaked[0] || res.Active.State != "active" || res.Active.KID == leaked[0] {
		t.Fatalf("revoke answered %s", body)
	}
	// At once on the sidecar that revoked: no wait.
	if kids := s0.kids(); slices.Contains(kids, leaked[0]) {
		t.Fatalf("%s still publishes the revoked key: %v", s0.name, kids)
	}
	eventually(t, 15*time.Second, s1.name+" to drop the revoked key", func() bool {
		return !slices.Contains(s1.kids(), leaked[0])
	})
	// Every token cached before is gone: each identity exchanges afresh with the new key.
	for _, s := range f.sidecars {
		var tok string
		eventually(t, 15*time.Second, s.name+" to drop its cached token", func() bool {
			tok = s.echoAs("revoke", s.name).header("Authorization")
			return tok != before[s.name]
		})
	}
	for _, jwt := range f.fake.JWTs() {
		if jwt.Tenant == "revoke" && jwt.KID != leaked[0] && jwt.KID != res.Active.KID {
			t.Errorf("JWT for %s signed by %s", jwt.User, jwt.KID)
		}
	}
	if n := countJWTs(f, "revoke", res.Active.KID); n != 2 {
		t.Errorf("%d exchanges with the new key, want one per identity (2)", n)
	}

	// The CLI, against the other sidecar, revokes the new key the same way.
	out, err := exec.Command(caddyBinary(t), "zapier", "keys", "revoke", res.Active.KID,
		"--address", fmt.Sprintf("localhost:%d", s1.adminPort)).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy zapier keys revoke: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Revoked key "+res.Active.KID) {
		t.Errorf("CLI printed %q", out)
	}
	if kids := s1.kids(); slices.Contains(kids, res.Active.KID) || len(kids) != 1 {
		t.Fatalf("%s publishes %v after the CLI revoked %s", s1.name, kids, res.Active.KID)
	}
	// An unknown or already revoked kid is a 404 with a clear message, and changes nothing.
	status, body = s0.admin(http.MethodPost, "/zapier/keys/revoke?kid="+leaked[0])
	if status != http.StatusNotFound || !strings.Contains(string(body), "no published key") {
		t.Errorf("revoking again: %d %s", status, body)
	}
	status, body = s0.admin(http.MethodPost, "/zapier/keys/revoke")
	if status != http.StatusBadRequest {
		t.Errorf("revoke without kid: %d %s", status, body)
	}
}

func countJWTs(f *fleet, tenant, kid string) int {
	n := 0
	for _, jwt := range f.fake.JWTs() {
		if jwt.Tenant == tenant && jwt.KID == kid {
			n++
		}
	}
	return n
}

// With the Redis tier, a revocation purges the shared tokens too: the
// sidecar that revoked does not get the old token back from Redis, and the
// other one, once it has seen the revocation, never serves it again.
func TestRevokePurgesTheRedisTier(t *testing.T) {
	f, _ := startRedisFleetWith(t, 2, "", fakezapier.Config{}, "key_rotation 0\n\t\tkey_overlap 1h\n\t\tkey_sync 1s")
	a, b := f.sidecars[0], f.sidecars[1]
	old := bearer(a.echoAs("rv", "u"))
	if got := bearer(b.echoAs("rv", "u")); got != old {
		t.Fatalf("b did not take a's token from Redis")
	}
	if n := f.fake.ExchangesFor("rv", "u"); n != 1 {
		t.Fatalf("%d exchanges before the revocation, want 1", n)
	}
	kid := a.kids()[0]
	if status, body := a.admin(http.MethodPost, "/zapier/keys/revoke?kid="+kid); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	fresh := bearer(a.echoAs("rv", "u"))
	if fresh == old || f.fake.ExchangesFor("rv", "u") != 2 {
		t.Fatalf("after the revocation a served the old token or no exchange happened (%d exchanges)", f.fake.ExchangesFor("rv", "u"))
	}
	eventually(t, 15*time.Second, "b to drop the revoked key", func() bool { return !slices.Contains(b.kids(), kid) })
	if got := bearer(b.echoAs("rv", "u")); got == old {
		t.Fatal("b still serves the token obtained with the revoked key")
	}
}
