package connect

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseCallbackQuery(t *testing.T) {
	ok := []struct {
		raw  string
		want CallbackParams
	}{
		{"authentication_id=100001&state=s1", CallbackParams{AuthID: "100001", State: "s1"}},
		{"authentication_id=example_akLLd8kB", CallbackParams{AuthID: "example_akLLd8kB"}},
		{"state=s&authentication_id=7&app=SlackCLIAPI", CallbackParams{AuthID: "7", State: "s"}},           // unknown params are ignored
		{"authentication_id=12345&service=SlackAPI", CallbackParams{AuthID: "12345", Service: "SlackAPI"}}, // as Zapier documents it
		{"authentication_id=1&service=SlackCLIAPI%401.0.0", CallbackParams{AuthID: "1", Service: "SlackCLIAPI@1.0.0"}},
		{"error=access_denied&error_description=User+not+found&state=s",
			CallbackParams{ErrCode: "access_denied", ErrDesc: "User not found", State: "s", HasError: true}},
		{"error=server_error&error_description=OAuth%20Failed%3A%20denied%0A%1B[31m",
			CallbackParams{ErrCode: "server_error", ErrDesc: "OAuth Failed: denied [31m", HasError: true}},
		{"error=%3Cscript%3E", CallbackParams{ErrCode: UnknownErrorCode, HasError: true}},
		{"error=" + strings.Repeat("x", 65), CallbackParams{ErrCode: UnknownErrorCode, HasError: true}},
		{"error=invalid_request&error_description=" + strings.Repeat("é", 400),
			CallbackParams{ErrCode: "invalid_request", ErrDesc: strings.Repeat("é", 150), HasError: true}},
	}
	for _, tc := range ok {
		got, err := ParseCallback(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("ParseCallback(%q) = %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
	for _, raw := range []string{
		"",
		"state=s",
		"authentication_id=1&error=access_denied",
		"authentication_id=1&authentication_id=2",
		"authentication_id=1&state=a&state=b",
		"authentication_id=1&service=a&service=b",
		"authentication_id=1&service=",
		"authentication_id=1&service=a%2Fb",
		"authentication_id=1&service=%3Cscript%3E",
		"error=a&error=b",
		"error=a&error_description=x&error_description=y",
		"authentication_id=",
		"authentication_id=a+b",
		"authentication_id=%00",
		"authentication_id=%C3%A9",
		"authentication_id=" + strings.Repeat("1", MaxConnectionID+1),
		"authentication_id=1&%zz=1",
		"authentication_id=1;state=2",
		"authentication_id=1&x=" + strings.Repeat("y", MaxCallbackQuery),
	} {
		if got, err := ParseCallback(raw); err == nil {
			t.Errorf("ParseCallback(%.80q) = %+v, want an error", raw, got)
		}
	}
}

// FuzzParseCallbackQuery: any query gives a clean result or an error, and a
// result is always one outcome with safe values.
func FuzzParseCallbackQuery(f *testing.F) {
	for _, s := range []string{
		"authentication_id=100001&state=v1.abc.def",
		"error=access_denied&error_description=User+not+found&state=s",
		"authentication_id=1&authentication_id=2",
		"error=%3Cscript%3E&error_description=%E2%80%AE%0A",
		"authentication_id=1&error=x",
		"authentication_id=%ff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ParseCallback(raw)
		if err != nil {
			return
		}
		if (p.AuthID != "") == p.HasError {
			t.Fatalf("%q: both or neither outcome: %+v", raw, p)
		}
		if p.AuthID != "" && !ValidConnectionID(p.AuthID) {
			t.Fatalf("%q: invalid connection id %q", raw, p.AuthID)
		}
		if p.HasError {
			if p.ErrCode != SanitizeErrorCode(p.ErrCode) {
				t.Fatalf("%q: unsanitized error code %q", raw, p.ErrCode)
			}
			if len(p.ErrDesc) > MaxErrorDesc || !utf8.ValidString(p.ErrDesc) ||
				strings.ContainsFunc(p.ErrDesc, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
				t.Fatalf("%q: unsafe description %q", raw, p.ErrDesc)
			}
		}
	})
}

// FuzzSanitizeZapierText: what Zapier sends comes out valid UTF-8, without
// control characters, within the limit; error codes come out as a token.
func FuzzSanitizeZapierText(f *testing.F) {
	f.Add("Authentication is expired.", 200)
	f.Add("a\x00b\r\nc\u202e", 3)
	f.Add("\xff\xfe", 1)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit = max(0, limit%1000)
		out := SanitizeText(s, limit)
		if !utf8.ValidString(out) || len(out) > limit {
			t.Fatalf("SanitizeText(%q, %d) = %q", s, limit, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || !unicode.IsPrint(r) && r != ' ' {
				t.Fatalf("control or unprintable rune %q in %q", r, out)
			}
		}
		code := SanitizeErrorCode(s)
		if code == "" || len(code) > MaxErrorCode || strings.ContainsAny(code, " <>\"'&\x00") {
			t.Fatalf("SanitizeErrorCode(%q) = %q", s, code)
		}
	})
}
