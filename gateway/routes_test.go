package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/ratelimit"
)

func testPolicy(t *testing.T) *Policy {
	rules := testRules(t, "127.0.0.0/8")
	lim, err := ratelimit.New(ratelimit.Config{Events: 2, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &Policy{Identity: &rules, Hosts: NewHostRules(), PerIdentity: lim}
}

func serve(p *Policy, rt Route, method, host string) (int, string, bool) {
	r := httptest.NewRequest(method, "/", nil)
	r.RemoteAddr, r.Host = "127.0.0.1:4000", host
	r.Header.Set("X-Zapier-User", "alice")
	r.Header.Set("X-Zapier-Tenant", "acme")
	w := httptest.NewRecorder()
	called := false
	_ = p.Serve(w, r, rt, func(w http.ResponseWriter, r *http.Request, id Identity) error {
		called = id == (Identity{Tenant: "acme", User: "alice"}) && r.Header.Get("X-Zapier-User") == ""
		return nil
	})
	return w.Code, w.Body.String(), called
}

// TestARouteThatDeclaresNoClassIsLimited: the zero Route is limited, so a
// route added without thinking about limits is limited, never open.
func TestARouteThatDeclaresNoClassIsLimited(t *testing.T) {
	p := testPolicy(t)
	rt := Route{Methods: []string{http.MethodGet}}
	for i := 0; i < 2; i++ {
		if code, body, called := serve(p, rt, http.MethodGet, "localhost"); code != 200 || !called {
			t.Fatalf("request %d: %d %s", i, code, body)
		}
	}
	if code, _, called := serve(p, rt, http.MethodGet, "localhost"); code != http.StatusTooManyRequests || called {
		t.Fatalf("the third request in the window: %d, called %v", code, called)
	}
	// Agent routes are not limited by the end-user limits.
	for i := 0; i < 5; i++ {
		if code, _, _ := serve(p, Route{Methods: []string{http.MethodGet}, Class: Agent}, http.MethodGet, "localhost"); code != 200 {
			t.Fatalf("agent request %d: %d", i, code)
		}
	}
}

func TestPolicyRefusesMethodHostAndIdentityInOrder(t *testing.T) {
	p := testPolicy(t)
	rt := Route{Methods: []string{http.MethodPost}, Class: Agent}
	if code, _, _ := serve(p, rt, http.MethodGet, "localhost"); code != http.StatusMethodNotAllowed {
		t.Fatalf("wrong method: %d", code)
	}
	if code, body, called := serve(p, rt, http.MethodPost, "attacker.example"); code != http.StatusForbidden || called {
		t.Fatalf("rebound Host: %d %s", code, body)
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.RemoteAddr, r.Host = "127.0.0.1:4000", "localhost"
	w := httptest.NewRecorder()
	_ = p.Serve(w, r, rt, func(http.ResponseWriter, *http.Request, Identity) error {
		t.Fatal("served without identity")
		return nil
	})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("no identity: %d", w.Code)
	}
}
