package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func testRules(t *testing.T, trusted ...string) IdentityRules {
	t.Helper()
	prefixes, err := ParseTrustedSources(trusted)
	if err != nil {
		t.Fatal(err)
	}
	return NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", prefixes)
}

// TestTrustedHostMemo: the memo of the last trusted host skips parsing for
// the same host on another port, and never extends trust to another host.
func TestTrustedHostMemo(t *testing.T) {
	rules := testRules(t, "127.0.0.1/32", "::1")
	for _, tc := range []struct {
		remote string
		want   bool
	}{
		{"127.0.0.1:1000", true},
		{"127.0.0.1:2000", true}, // from the memo
		{"127.0.0.10:1000", false},
		{"127.0.0.1:2000", true},
		{"127.0.0.1", true}, // no port: parsed
		{"[::1]:1000", true},
		{"[::2]:1000", false},
		{"x127.0.0.1:1000", false},
		{"127.0.0.1:1000:1", false},
		{"10.0.0.1:1000", false},
		{"127.0.0.1:3000", true},
		{"::1", true}, // no port and no brackets: parsed, not memoized
		{":5", false},
		{"127.0.0.1:x", true}, // as SplitHostPort reads it
	} {
		if got := rules.IsTrusted(tc.remote); got != tc.want {
			t.Errorf("isTrusted(%q) = %v, want %v (memo %q)", tc.remote, got, tc.want, memo(rules))
		}
	}
}

func memo(rules IdentityRules) string {
	if p := rules.lastTrusted.Load(); p != nil {
		return *p
	}
	return ""
}

func TestExtractIdentity(t *testing.T) {
	rules := testRules(t, "127.0.0.0/8", "::1")
	cases := []struct {
		name       string
		remote     string
		header     http.Header
		wantCode   string
		wantTenant string
		wantUser   string
	}{
		{"ok", "127.0.0.1:5000", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, "", "t", "u"},
		{"ipv6 loopback", "[::1]:5000", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, "", "t", "u"},
		{"v4-mapped loopback", "[::ffff:127.0.0.1]:5000", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, "", "t", "u"},
		{"unicode id", "127.0.0.1:1", http.Header{"X-Zapier-User": {"ユーザー/../x"}, "X-Zapier-Tenant": {"t"}}, "", "t", "ユーザー/../x"},
		{"missing", "127.0.0.1:1", http.Header{}, "identity_missing", "", ""},
		{"missing from untrusted", "10.0.0.1:1", http.Header{}, "identity_missing", "", ""},
		{"user only", "127.0.0.1:1", http.Header{"X-Zapier-User": {"u"}}, "identity_missing", "", ""},
		{"untrusted", "10.0.0.1:1", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, "identity_untrusted", "", ""},
		{"untrusted underscore only", "10.0.0.1:1", http.Header{"X_zapier_user": {"u"}}, "identity_untrusted", "", ""},
		{"unparseable peer", "garbage", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, "identity_untrusted", "", ""},
		{"two users", "127.0.0.1:1", http.Header{"X-Zapier-User": {"u", "v"}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
		{"two users no tenant", "127.0.0.1:1", http.Header{"X-Zapier-User": {"u", "v"}}, "identity_invalid", "", ""},
		{"empty", "127.0.0.1:1", http.Header{"X-Zapier-User": {""}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
		{"too long", "127.0.0.1:1", http.Header{"X-Zapier-User": {strings.Repeat("a", 257)}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
		{"256 ok", "127.0.0.1:1", http.Header{"X-Zapier-User": {strings.Repeat("a", 256)}, "X-Zapier-Tenant": {"t"}}, "", "t", strings.Repeat("a", 256)},
		{"control", "127.0.0.1:1", http.Header{"X-Zapier-User": {"a\x01b"}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
		{"del", "127.0.0.1:1", http.Header{"X-Zapier-User": {"a\x7fb"}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
		{"bad utf8", "127.0.0.1:1", http.Header{"X-Zapier-User": {"a\xffb"}, "X-Zapier-Tenant": {"t"}}, "identity_invalid", "", ""},
	}
	// Twice over: the second pass meets every peer with the trusted-host memo
	// set by the one before it.
	for _, tc := range append(cases, cases...) {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			r.Header = tc.header.Clone()
			tenant, user, ierr := rules.Extract(r)
			code := ""
			if ierr != nil {
				code = ierr.Code
			}
			if code != tc.wantCode || tenant != tc.wantTenant || user != tc.wantUser {
				t.Errorf("got (%q, %q, %q), want (%q, %q, %q)", tenant, user, code, tc.wantTenant, tc.wantUser, tc.wantCode)
			}
			for name := range r.Header {
				if foldsTo(name, "X-Zapier-User") || foldsTo(name, "X-Zapier-Tenant") {
					t.Errorf("identity header %q left on the request", name)
				}
			}
		})
	}
}

func TestUnderscoreAndCaseVariantsAreRemovedNotRead(t *testing.T) {
	rules := testRules(t, "127.0.0.1")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header = http.Header{
		"X-Zapier-User":   {"real-user"},
		"X-Zapier-Tenant": {"real-tenant"},
		"X_zapier_user":   {"spoofed"},
		"x-zapier_tenant": {"spoofed"},
		"X-ZAPIER-USER":   {"spoofed"}, // not canonical: set by hand, never by net/http
		"X-Other":         {"kept"},
	}
	tenant, user, ierr := rules.Extract(r)
	if ierr != nil || tenant != "real-tenant" || user != "real-user" {
		t.Fatalf("got %q/%q/%v", tenant, user, ierr)
	}
	if len(r.Header) != 1 || r.Header.Get("X-Other") != "kept" {
		t.Errorf("headers left: %v", r.Header)
	}
}

func TestIdentityHashIsShortAndKeyed(t *testing.T) {
	h := LogHash("tenant", "user")
	if len(h) != 12 || strings.Contains(h, "user") {
		t.Errorf("identityHash = %q", h)
	}
	if h == LogHash("tenantu", "ser") {
		t.Error("tenant/user boundary is ambiguous")
	}
}

func FuzzExtractIdentity(f *testing.F) {
	f.Add("127.0.0.1:1", "X-Zapier-User", "u", "X-Zapier-Tenant", "t")
	f.Add("10.1.1.1:1", "X_Zapier_User", "u", "x-zapier-tenant", "t")
	f.Add("[::1]:9", "X-Zapier-User", "\x00", "X-Zapier-Tenant", strings.Repeat("é", 200))
	prefixes, _ := ParseTrustedSources([]string{"127.0.0.0/8", "::1"})
	rules := NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", prefixes)
	unmemoized := rules
	unmemoized.lastTrusted = nil
	f.Fuzz(func(t *testing.T, remote, name1, value1, name2, value2 string) {
		// The trusted-host memo, whatever earlier inputs left in it, never
		// changes the answer.
		if got, want := rules.IsTrusted(remote), unmemoized.IsTrusted(remote); got != want {
			t.Fatalf("isTrusted(%q) = %v with the memo (%q), %v without", remote, got, memo(rules), want)
		}
		r := &http.Request{RemoteAddr: remote, Header: http.Header{name1: {value1}, name2: {value2}}}
		tenant, user, ierr := rules.Extract(r)
		if ierr == nil && (!ValidIdentity(tenant) || !ValidIdentity(user)) {
			t.Fatalf("accepted invalid identity %q/%q", tenant, user)
		}
		for name := range r.Header {
			if foldsTo(name, rules.userHeader) || foldsTo(name, rules.tenantHeader) {
				t.Fatalf("identity header %q left on the request", name)
			}
		}
	})
}
