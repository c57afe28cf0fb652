package connect

import (
	"net/url"
	"strings"
	"testing"
)

var testReturnOrigins = []string{"https://app.example.com", "http://localhost:3000/"}

func TestCheckReturnToAccepts(t *testing.T) {
	for _, rt := range []string{
		"/",
		"/settings/integrations",
		"/done?tab=apps&x=1",
		"/done#frag",
		"/a/b/../c",
		"/caf%C3%A9",
		"/q?next=https://elsewhere.example/", // "//" in the query is data, not a host
		"/#//not-a-host",
		"https://app.example.com",
		"https://app.example.com/",
		"https://app.example.com/settings?x=1#y",
		"https://app.example.com?x=1",
		"https://app.example.com#top",
		"http://localhost:3000/done",
	} {
		if err := CheckReturnTo(rt, testReturnOrigins); err != nil {
			t.Errorf("CheckReturnTo(%q) = %v, want accepted", rt, err)
		}
	}
}

// hostileReturnTos are open-redirect attempts; the integration tests send
// them through GET start too.
var hostileReturnTos = []string{
	"",
	"//evil.example",
	"//evil.example/path",
	"///evil.example",
	"/\\evil.example",
	"\\\\evil.example",
	"\\/evil.example",
	"/\\/evil.example",
	"https:evil.example",
	"https:/evil.example",
	"https:\\\\evil.example",
	"http://evil.example",
	"https://evil.example/",
	"javascript:alert(1)",
	"JavaScript:alert(1)",
	"data:text/html,hi",
	"evil.example",
	" /x",
	"/%2F%2Fevil.example",
	"/%2f%2fevil.example",
	"/%2F/evil.example",
	"/%5Cevil.example",
	"/%5cevil.example",
	"/%252F%252Fevil.example", // double-encoded
	"/%25252F%25252Fevil.example",
	"%2F%2Fevil.example",
	"/\t/evil.example",
	"/\n/evil.example",
	"/\r\n/evil.example",
	"/%09/evil.example",
	"/%0A/evil.example",
	"/%00",
	"/x\x00y",
	"/x\x7fy",
	"/ok//double",
	"/ok/%2F/double",
	"/%zz",
	"/\u2215\u2215evil.example", // raw non-ASCII
	"/x\\y",
	"HTTPS://app.example.com/", // not exactly a configured origin
	"https://APP.example.com/",
	"https://app.example.com.evil.example/",
	"https://app.example.com@evil.example/",
	"https://app.example.com:443@evil.example/",
	"https://app.example.com:8443/",
	"https://app.example.com\\@evil.example/",
	"https://app.example.com//evil.example",
	"https://app.example.com/%2F%2Fevil.example",
	"https://app.example.com/\\evil.example",
	"http://app.example.com/", // scheme differs
	"http://localhost:3000.evil.example/",
	"http://localhost:30000/",
	"/" + strings.Repeat("a", MaxReturnTo),
}

func TestCheckReturnToRefusesHostileVariants(t *testing.T) {
	for _, rt := range hostileReturnTos {
		if err := CheckReturnTo(rt, testReturnOrigins); err == nil {
			t.Errorf("CheckReturnTo(%q) accepted an open redirect", rt)
		}
	}
	// With no return_origins, every absolute URL is refused.
	if err := CheckReturnTo("https://app.example.com/", nil); err == nil {
		t.Error("an absolute URL was accepted with no return_origins")
	}
}

func TestWithOutcome(t *testing.T) {
	params := url.Values{"zapier_connect": {"success"}, "zapier_connection_id": {"42"}}
	for in, want := range map[string]string{
		"/done":                      "/done?zapier_connect=success&zapier_connection_id=42",
		"/done?":                     "/done?zapier_connect=success&zapier_connection_id=42",
		"/done?tab=1":                "/done?tab=1&zapier_connect=success&zapier_connection_id=42",
		"/done?tab=1&":               "/done?tab=1&zapier_connect=success&zapier_connection_id=42",
		"/done#frag":                 "/done?zapier_connect=success&zapier_connection_id=42#frag",
		"https://app.example.com":    "https://app.example.com?zapier_connect=success&zapier_connection_id=42",
		"https://app.example.com/?a": "https://app.example.com/?a&zapier_connect=success&zapier_connection_id=42",
	} {
		if got := WithOutcome(in, params); got != want {
			t.Errorf("WithOutcome(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCheckReturnTo: whatever is accepted, resolved against a page of the
// partner's site the way a browser does it (backslashes as slashes, tabs
// and newlines dropped), stays on that site or a configured origin.
func FuzzCheckReturnTo(f *testing.F) {
	for _, s := range append(hostileReturnTos, "/", "/done?x=1#y", "https://app.example.com/x") {
		f.Add(s)
	}
	base, _ := url.Parse("https://partner.example/app/page?q=1")
	allowedHosts := map[string]bool{"partner.example": true, "app.example.com": true, "localhost:3000": true}
	f.Fuzz(func(t *testing.T, rt string) {
		if CheckReturnTo(rt, testReturnOrigins) != nil {
			return
		}
		if strings.ContainsAny(rt, "\\\t\n\r\x00") {
			t.Fatalf("accepted %q with a backslash or control character", rt)
		}
		browserish := strings.NewReplacer("\\", "/", "\t", "", "\n", "", "\r", "").Replace(rt)
		for range maxUnescapes + 1 {
			ref, err := url.Parse(browserish)
			if err != nil {
				t.Fatalf("accepted %q, which does not parse: %v", rt, err)
			}
			u := base.ResolveReference(ref)
			if !allowedHosts[u.Host] || (u.Scheme != "https" && u.Scheme != "http") {
				t.Fatalf("accepted %q, which leads to %s://%s", rt, u.Scheme, u.Host)
			}
			dec, err := url.PathUnescape(browserish)
			if err != nil || dec == browserish {
				break
			}
			browserish = dec
		}
		out := WithOutcome(rt, url.Values{"zapier_connect": {"success"}})
		if !strings.HasPrefix(out, strings.SplitN(strings.SplitN(rt, "#", 2)[0], "?", 2)[0]) {
			t.Fatalf("WithOutcome(%q) = %q changed the target", rt, out)
		}
	})
}
