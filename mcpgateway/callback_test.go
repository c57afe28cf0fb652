package mcpgateway

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/zapgate/caddy-zapier/connect"
)

func TestParseCallback(t *testing.T) {
	for raw, ok := range map[string]bool{
		"code=abc&state=s":                   true,
		"error=access_denied&state=s":        true,
		"code=abc&error=x&state=s":           false, // both
		"state=s":                            false, // neither
		"code=a&code=b&state=s":              false, // repeated
		"code=a&state=s&state=t":             false,
		"code=a%20b&state=s":                 false, // not visible ASCII
		"code=&state=s":                      false,
		"code=" + strings.Repeat("a", 3000):  false,
		"error=%3Cscript%3E&state=s&extra=1": true,  // sanitised, unknown ignored
		"code=a;b":                           false, // semicolons are not separators
	} {
		p, err := ParseCallback(raw)
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%t", raw, err, ok)
		}
		if err == nil && p.HasError && p.ErrCode != "access_denied" && p.ErrCode != connect.UnknownErrorCode {
			t.Errorf("%q: error code %q not sanitised", raw, p.ErrCode)
		}
	}
}

// FuzzParseCallback: any query gives an error or exactly one outcome with
// safe values: a visible-ASCII code within MaxCode, or a sanitised error.
func FuzzParseCallback(f *testing.F) {
	for _, s := range []string{
		"code=abc&state=v1.abc.def",
		"error=access_denied&error_description=User+denied&state=s",
		"code=a&code=b",
		"error=%3Cscript%3E&error_description=%E2%80%AE%0A",
		"code=a&error=x",
		"code=%ff",
		"code=a;state=b",
		"state=s&error=&error_description=" + strings.Repeat("%00", 40),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ParseCallback(raw)
		if err != nil {
			return
		}
		if (p.Code != "") == p.HasError {
			t.Fatalf("%q: both or neither outcome: %+v", raw, p)
		}
		if !p.HasError && (len(p.Code) > MaxCode || !visibleASCII(p.Code)) {
			t.Fatalf("%q: unsafe code %q", raw, p.Code)
		}
		if p.HasError {
			if p.ErrCode != connect.SanitizeErrorCode(p.ErrCode) {
				t.Fatalf("%q: unsanitised error code %q", raw, p.ErrCode)
			}
			if len(p.ErrDesc) > connect.MaxErrorDesc || !utf8.ValidString(p.ErrDesc) ||
				strings.ContainsFunc(p.ErrDesc, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
				t.Fatalf("%q: unsafe description %q", raw, p.ErrDesc)
			}
		}
	})
}
