package caddymodule

import (
	"errors"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/gateway"
)

// Fuzz targets for what parses untrusted bytes in the Caddy adapter (more
// are next to the code they test: FuzzExtractIdentity in identity_test.go,
// and connect/'s FuzzDecodeState, FuzzParseCallbackQuery,
// FuzzCheckReturnTo, FuzzFlowCookieEntries, FuzzConnectionIDFromJSON and
// FuzzStorageKeyPart, and actions/'s FuzzParseWait with Go's durations).
// `make -f xcaddy.mk fuzz` runs each; `test` runs the
// seeds and testdata/fuzz.

// FuzzParseWait: a wait (read with Caddy's durations, as zapier_actions
// does) is accepted only within [0, actions.MaxRunWait].
func FuzzParseWait(f *testing.F) {
	for _, s := range []string{`"30s"`, `30`, `0.05`, `"0s"`, `null`, `-1`, `1e308`, `"1d"`, `"-5s"`, `NaN`, `"9223372036s"`, `120.0000001`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := actions.ParseWait(raw, caddy.ParseDuration)
		if err != nil {
			var rerr *actions.RequestError
			if !errors.As(err, &rerr) {
				t.Fatalf("error %+v", err)
			}
			return
		}
		if d < 0 || d > actions.MaxRunWait {
			t.Fatalf("accepted wait %v", d)
		}
	})
}

// FuzzEtagMatches: never panics; the exact tag and * always match, an
// unrelated header never does.
func FuzzEtagMatches(f *testing.F) {
	f.Add(`"abc"`, `"abc"`)
	f.Add(`W/"abc", "def"`, `"def"`)
	f.Add(`*`, `"x"`)
	f.Add(`,,,`, `""`)
	f.Fuzz(func(t *testing.T, header, etag string) {
		got := etagMatches(header, etag)
		if strings.TrimSpace(etag) == etag && etag != "" && !strings.Contains(etag, ",") && !etagMatches(etag, etag) {
			t.Fatalf("%q does not match itself", etag)
		}
		if !strings.Contains(header, "*") && !strings.Contains(header, strings.TrimPrefix(etag, "W/")) && got {
			t.Fatalf("%q matched %q", header, etag)
		}
	})
}

// FuzzParseTrustedSources: never panics; what it accepts is one masked
// prefix per source.
func FuzzParseTrustedSources(f *testing.F) {
	f.Add("127.0.0.0/8 ::1/128")
	f.Add("10.0.0.1")
	f.Add("0.0.0.0/0 ::/0")
	f.Add("1.2.3.4/33 fe80::1%eth0")
	f.Fuzz(func(t *testing.T, list string) {
		sources := strings.Fields(list)
		prefixes, err := gateway.ParseTrustedSources(sources)
		if err != nil {
			return
		}
		if len(prefixes) != len(sources) {
			t.Fatalf("%d prefixes for %d sources", len(prefixes), len(sources))
		}
		for _, p := range prefixes {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("prefix %v", p)
			}
		}
	})
}
