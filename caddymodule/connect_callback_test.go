package caddymodule

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseCallbackQuery(t *testing.T) {
	ok := []struct {
		raw  string
		want callbackParams
	}{
		{"authentication_id=100001&state=s1", callbackParams{authID: "100001", state: "s1"}},
		{"authentication_id=example_akLLd8kB", callbackParams{authID: "example_akLLd8kB"}},
		{"state=s&authentication_id=7&app=SlackCLIAPI", callbackParams{authID: "7", state: "s"}}, // unknown params are ignored
		{"error=access_denied&error_description=User+not+found&state=s",
			callbackParams{errCode: "access_denied", errDesc: "User not found", state: "s", hasError: true}},
		{"error=server_error&error_description=OAuth%20Failed%3A%20denied%0A%1B[31m",
			callbackParams{errCode: "server_error", errDesc: "OAuth Failed: denied [31m", hasError: true}},
		{"error=%3Cscript%3E", callbackParams{errCode: unknownErrorCode, hasError: true}},
		{"error=" + strings.Repeat("x", 65), callbackParams{errCode: unknownErrorCode, hasError: true}},
		{"error=invalid_request&error_description=" + strings.Repeat("é", 400),
			callbackParams{errCode: "invalid_request", errDesc: strings.Repeat("é", 150), hasError: true}},
	}
	for _, tc := range ok {
		got, err := parseCallbackQuery(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("parseCallbackQuery(%q) = %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
	for _, raw := range []string{
		"",
		"state=s",
		"authentication_id=1&error=access_denied",
		"authentication_id=1&authentication_id=2",
		"authentication_id=1&state=a&state=b",
		"error=a&error=b",
		"error=a&error_description=x&error_description=y",
		"authentication_id=",
		"authentication_id=a+b",
		"authentication_id=%00",
		"authentication_id=%C3%A9",
		"authentication_id=" + strings.Repeat("1", maxConnectionID+1),
		"authentication_id=1&%zz=1",
		"authentication_id=1;state=2",
		"authentication_id=1&x=" + strings.Repeat("y", maxCallbackQuery),
	} {
		if got, err := parseCallbackQuery(raw); err == nil {
			t.Errorf("parseCallbackQuery(%.80q) = %+v, want an error", raw, got)
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
		p, err := parseCallbackQuery(raw)
		if err != nil {
			return
		}
		if (p.authID != "") == p.hasError {
			t.Fatalf("%q: both or neither outcome: %+v", raw, p)
		}
		if p.authID != "" && !validConnectionID(p.authID) {
			t.Fatalf("%q: invalid connection id %q", raw, p.authID)
		}
		if p.hasError {
			if p.errCode != sanitizeErrorCode(p.errCode) {
				t.Fatalf("%q: unsanitized error code %q", raw, p.errCode)
			}
			if len(p.errDesc) > maxErrorDesc || !utf8.ValidString(p.errDesc) ||
				strings.ContainsFunc(p.errDesc, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
				t.Fatalf("%q: unsafe description %q", raw, p.errDesc)
			}
		}
	})
}

func TestConnectionIDFromJSON(t *testing.T) {
	for raw, want := range map[string]string{`"100001"`: "100001", `100001`: "100001", ` 7 `: "7", `"example_akLLd8kB"`: "example_akLLd8kB"} {
		if got, ok := connectionIDFromJSON([]byte(raw)); !ok || got != want {
			t.Errorf("connectionIDFromJSON(%s) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	for _, raw := range []string{``, `""`, `null`, `1.5`, `1e5`, `-1`, `true`, `{}`, `["1"]`, `"a b"`, `"\u0000"`, `"` + strings.Repeat("1", 257) + `"`} {
		if got, ok := connectionIDFromJSON([]byte(raw)); ok {
			t.Errorf("connectionIDFromJSON(%s) = %q, want refused", raw, got)
		}
	}
}
