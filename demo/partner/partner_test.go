package partner

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// login posts the login form and returns the session cookie it set.
func login(t *testing.T, s *Server, tenant, user string) *http.Cookie {
	t.Helper()
	form := url.Values{"tenant": {tenant}, "user": {user}}
	req := httptest.NewRequest(http.MethodPost, "/partner/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/" {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != CookieName || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteLaxMode {
		t.Fatalf("login cookies: %+v", cookies)
	}
	return cookies[0]
}

// identityOf asks the forward_auth route with cookie c.
func identityOf(s *Server, c *http.Cookie) (int, string, string) {
	req := httptest.NewRequest(http.MethodGet, "/identity", nil)
	if c != nil {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec.Code, rec.Header().Get("X-Zapier-Tenant"), rec.Header().Get("X-Zapier-User")
}

func TestLoginGivesTheIdentityOfTheSession(t *testing.T) {
	s := New(testKey)
	c := login(t, s, "org_acme", "alice")
	if code, tenant, user := identityOf(s, c); code != http.StatusOK || tenant != "org_acme" || user != "alice" {
		t.Errorf("identity = %d %q %q", code, tenant, user)
	}
	req := httptest.NewRequest(http.MethodGet, "/partner/session", nil)
	req.AddCookie(c)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"tenant":"org_acme","user":"alice"`) {
		t.Errorf("session = %d %s", rec.Code, rec.Body)
	}
}

func TestIdentityRefusesWhatThisServerDidNotSign(t *testing.T) {
	s := New(testKey)
	good := login(t, s, "org_acme", "alice")
	payload, sig, _ := strings.Cut(good.Value, ".")
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"tenant":"org_acme","user":"bob","exp":9999999999}`))
	otherKey := login(t, New([]byte("another key, another partner....")), "org_acme", "bob")
	for name, value := range map[string]string{
		"no signature":        payload,
		"forged payload":      forged + "." + sig,
		"other key":           otherKey.Value,
		"garbage":             "!!!.???",
		"empty":               "",
		"signature of itself": payload + "." + payload,
	} {
		if code, tenant, user := identityOf(s, &http.Cookie{Name: CookieName, Value: value}); code != http.StatusUnauthorized || tenant != "" || user != "" {
			t.Errorf("%s: identity = %d %q %q", name, code, tenant, user)
		}
	}
	if code, _, _ := identityOf(s, nil); code != http.StatusUnauthorized {
		t.Errorf("no cookie: identity = %d", code)
	}
}

func TestSessionExpires(t *testing.T) {
	s := New(testKey)
	c := login(t, s, "org_acme", "alice")
	s.now = func() time.Time { return time.Now().Add(sessionTTL + time.Second) }
	if code, _, _ := identityOf(s, c); code != http.StatusUnauthorized {
		t.Errorf("expired session: identity = %d", code)
	}
}

func TestLoginRefusesBadIDsAndOtherSites(t *testing.T) {
	s := New(testKey)
	for _, form := range []url.Values{
		{"tenant": {"org_acme"}},
		{"tenant": {"org acme"}, "user": {"alice"}},
		{"tenant": {"org_acme"}, "user": {strings.Repeat("a", 65)}},
	} {
		req := httptest.NewRequest(http.MethodPost, "/partner/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || len(rec.Result().Cookies()) != 0 {
			t.Errorf("login %v = %d", form, rec.Code)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/partner/login", strings.NewReader("tenant=org_acme&user=alice"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || len(rec.Result().Cookies()) != 0 {
		t.Errorf("cross-site login = %d", rec.Code)
	}
}

func TestLogoutClearsTheCookie(t *testing.T) {
	s := New(testKey)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/partner/logout", nil))
	cookies := rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther || len(cookies) != 1 || cookies[0].MaxAge >= 0 || cookies[0].Value != "" {
		t.Errorf("logout: %d %+v", rec.Code, cookies)
	}
}

// The tenant's usage comes from the gateway's admin API: this month's
// tasks and the tenant's quota (its own, else every tenant's).
func TestUsageAsksTheAdminAPI(t *testing.T) {
	var asked []string
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		asked = append(asked, r.Method+" "+r.URL.Path+" "+string(body))
		switch r.URL.Path {
		case "/zapier/usage":
			_, _ = w.Write([]byte(`{"tenant":"org_acme","tasks":7}`))
		case "/zapier/status":
			_, _ = w.Write([]byte(`{"usage":{"default_quota":"1000/720h","tenants":[{"tenant":"org_acme","quota":"50/24h"}]}}`))
		}
	}))
	defer admin.Close()
	s := New(testKey)
	s.now = func() time.Time { return time.Date(2026, 7, 19, 10, 0, 0, 0, time.UTC) }
	s.EnableUsage(admin.URL)
	c := login(t, s, "org_acme", "alice")
	req := httptest.NewRequest(http.MethodGet, "/partner/usage", nil)
	req.AddCookie(c)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"quota":"50/24h"`) || !strings.Contains(rec.Body.String(), `"tasks":7`) {
		t.Fatalf("usage = %d %s", rec.Code, rec.Body)
	}
	if len(asked) != 2 || asked[0] != `POST /zapier/usage {"since":"2026-07-01T00:00:00Z","tenant":"org_acme"}` {
		t.Fatalf("asked %q", asked)
	}
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/partner/usage", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("without a session: %d", rec.Code)
	}
}
