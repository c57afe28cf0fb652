package sharedtokens

import (
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// FuzzKeyringOpen: the decoder of sealed values read from Redis never
// panics, opens nothing it did not seal, and opens what it sealed only
// under the same binding.
func FuzzKeyringOpen(f *testing.F) {
	k := newKeyring(testKey)
	at := binding{namespace: "ns", id: "id", fence: 3}
	sealed, err := k.seal(at, stored{Token: tokencache.Token{Value: "tok", Expiry: time.Unix(2000000000, 0)}, Obtained: time.Unix(1999999000, 0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, "tok", int64(3))
	f.Add([]byte{sealVersion}, "", int64(0))
	f.Add([]byte{1, 2, 3}, "x", int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, token string, fence int64) {
		if s, err := k.open(at, data); err == nil {
			// Only a value sealed under this key and binding opens; the
			// fuzzer cannot forge AES-GCM.
			if _, err := k.open(binding{namespace: "ns", id: "id", fence: 4}, data); err == nil {
				t.Fatalf("opened under two fences: %+v", s)
			}
		} else if err != errUndecryptable {
			t.Fatalf("open error %v, want errUndecryptable", err)
		}
		b := binding{namespace: "ns", id: "id", fence: fence}
		in := stored{Token: tokencache.Token{Value: token, Expiry: time.Unix(0, fence)}, Obtained: time.Unix(0, -fence)}
		out, err := k.seal(b, in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.open(b, out)
		if err != nil || got.Token.Value != token || !got.Token.Expiry.Equal(in.Token.Expiry) || !got.Obtained.Equal(in.Obtained) {
			t.Fatalf("round trip of %q: %+v %v", token, got, err)
		}
		if _, err := k.open(binding{namespace: "ns", id: "id", fence: fence + 1}, out); err == nil {
			t.Fatal("opened under another fence")
		}
	})
}
