package connect

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// A connection id is only the user's connection to the app asked about:
// the same id listed under another app does not count.
func TestFindConnectionChecksTheApp(t *testing.T) {
	auths := []zapierapi.Authentication{
		{ID: "1", App: "other-app"},
		{ID: "2", App: "app-uuid"},
	}
	if a := FindConnection(auths, "1", "app-uuid"); a != nil {
		t.Fatalf("found %+v under another app", a)
	}
	if a := FindConnection(auths, "2", "app-uuid"); a == nil || a.ID != "2" {
		t.Fatalf("did not find the app's own connection: %+v", a)
	}
	if a := FindConnection(auths, "3", "app-uuid"); a != nil {
		t.Fatalf("found an unknown id: %+v", a)
	}
}

func TestConnectionIDFromJSON(t *testing.T) {
	for raw, want := range map[string]string{`"100001"`: "100001", `100001`: "100001", ` 7 `: "7", `"example_akLLd8kB"`: "example_akLLd8kB"} {
		if got, ok := ConnectionIDFromJSON([]byte(raw)); !ok || got != want {
			t.Errorf("ConnectionIDFromJSON(%s) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	for _, raw := range []string{``, `""`, `null`, `1.5`, `1e5`, `-1`, `true`, `{}`, `["1"]`, `"a b"`, `"\u0000"`, `"` + strings.Repeat("1", 257) + `"`} {
		if got, ok := ConnectionIDFromJSON([]byte(raw)); ok {
			t.Errorf("ConnectionIDFromJSON(%s) = %q, want refused", raw, got)
		}
	}
}

// FuzzConnectionIDFromJSON: an accepted id is a valid connection id and
// reads back the same from its JSON string form.
func FuzzConnectionIDFromJSON(f *testing.F) {
	for _, s := range []string{`"123"`, `123`, `"abc_1"`, `-1`, `1e3`, `"\u0000"`, `null`, `""`, ` 42 `, `"` + strings.Repeat("9", 300) + `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		id, ok := ConnectionIDFromJSON(raw)
		if !ok {
			return
		}
		if !ValidConnectionID(id) {
			t.Fatalf("accepted invalid id %q", id)
		}
		quoted, _ := json.Marshal(id)
		if again, ok := ConnectionIDFromJSON(quoted); !ok || again != id {
			t.Fatalf("%q does not round-trip: %q %v", id, again, ok)
		}
	})
}
