package webhooksig

import (
	"net/http"
	"testing"
	"time"
)

// FuzzVerify: whatever the headers and body, Verify never panics, and it
// accepts only what the signer would have produced (the spec's vector, or a
// body signed here), never a changed body under a valid signature.
func FuzzVerify(f *testing.F) {
	f.Add(specID, "1614265330", specSignature, []byte(specBody))
	f.Add(specID, "1614265330", "v1,AAAA v1,"+specSignature[3:], []byte(specBody))
	f.Add("", "", "", []byte(nil))
	f.Add("msg", "-1", "v1,", []byte("{}"))
	f.Add("msg", "99999999999999999999", "v2,abc v1a,", []byte("x"))
	v, err := NewVerifier(specSecret, 0, fixedNow(specTimestamp))
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewSigner(specSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		got, err := v.Verify(body, h)
		if err != nil {
			return
		}
		if got != id {
			t.Fatalf("Verify returned id %q for %q", got, id)
		}
		// Accepted: the signature must be one the signer makes for this
		// exact id, timestamp and body.
		secs := h.Get(HeaderTimestamp)
		if secs == "" {
			t.Fatal("accepted without a timestamp")
		}
		want := s.Sign(id, time.Unix(specTimestamp, 0), body)
		if sig != want && !containsEntry(sig, want) && !signedAtOtherSecond(s, id, secs, body, sig) {
			t.Fatalf("accepted a signature the signer does not make: %q", sig)
		}
	})
}

func containsEntry(list, entry string) bool {
	for i := 0; i+len(entry) <= len(list); i++ {
		if list[i:i+len(entry)] == entry && (i == 0 || list[i-1] == ' ') && (i+len(entry) == len(list) || list[i+len(entry)] == ' ') {
			return true
		}
	}
	return false
}

// signedAtOtherSecond: the timestamp may be any second within the
// tolerance; check the signature for the one given.
func signedAtOtherSecond(s *Signer, id, secs string, body []byte, sig string) bool {
	var n int64
	for _, c := range secs {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	want := s.Sign(id, time.Unix(n, 0), body)
	return sig == want || containsEntry(sig, want)
}
