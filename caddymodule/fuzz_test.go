package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/connect"
)

// Fuzz targets for what parses untrusted bytes in the Caddy adapter (more
// are next to the code they test: FuzzDecodeState, FuzzExtractIdentity,
// and connect/'s FuzzParseCallbackQuery, FuzzCheckReturnTo and
// FuzzFlowCookieEntries). `make -f xcaddy.mk fuzz` runs each; `test` runs
// the seeds and testdata/fuzz.

// FuzzConnectionIDFromJSON: an accepted id is a valid connection id and
// reads back the same from its JSON string form.
func FuzzConnectionIDFromJSON(f *testing.F) {
	for _, s := range []string{`"123"`, `123`, `"abc_1"`, `-1`, `1e3`, `"\u0000"`, `null`, `""`, ` 42 `, `"` + strings.Repeat("9", 300) + `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		id, ok := connectionIDFromJSON(raw)
		if !ok {
			return
		}
		if !connect.ValidConnectionID(id) {
			t.Fatalf("accepted invalid id %q", id)
		}
		quoted, _ := json.Marshal(id)
		if again, ok := connectionIDFromJSON(quoted); !ok || again != id {
			t.Fatalf("%q does not round-trip: %q %v", id, again, ok)
		}
	})
}

// FuzzParseWait: a wait is accepted only within [0, maxRunWait].
func FuzzParseWait(f *testing.F) {
	for _, s := range []string{`"30s"`, `30`, `0.05`, `"0s"`, `null`, `-1`, `1e308`, `"1d"`, `"-5s"`, `NaN`, `"9223372036s"`, `120.0000001`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := parseWait(raw)
		if err != nil {
			if err.Status != http.StatusBadRequest || err.Code != "bad_request" {
				t.Fatalf("error %+v", err)
			}
			return
		}
		if d < 0 || d > maxRunWait {
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
		prefixes, err := parseTrustedSources(sources)
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
