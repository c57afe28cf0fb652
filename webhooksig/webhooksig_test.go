package webhooksig

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test vector published with the Standard Webhooks specification
// (spec/standard-webhooks.md, "Signature scheme") and used by every
// reference library's tests.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func specHeaders() http.Header {
	h := http.Header{}
	h.Set(HeaderID, specID)
	h.Set(HeaderTimestamp, strconv.Itoa(specTimestamp))
	h.Set(HeaderSignature, specSignature)
	return h
}

func fixedNow(unix int64) func() time.Time { return func() time.Time { return time.Unix(unix, 0) } }

func TestSpecVectorSign(t *testing.T) {
	s, err := NewSigner(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody)); got != specSignature {
		t.Fatalf("Sign = %q, want the spec's %q", got, specSignature)
	}
	h := http.Header{}
	s.SetHeaders(h, specID, time.Unix(specTimestamp, 0), []byte(specBody))
	for name, want := range map[string]string{HeaderID: specID, HeaderTimestamp: "1614265330", HeaderSignature: specSignature} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestSpecVectorVerify(t *testing.T) {
	v, err := NewVerifier(specSecret, 0, fixedNow(specTimestamp+10))
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify([]byte(specBody), specHeaders())
	if err != nil || id != specID {
		t.Fatalf("Verify = %q, %v", id, err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	v, err := NewVerifier(specSecret, 0, fixedNow(specTimestamp))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		body string
		edit func(h http.Header)
		now  int64
		want error
	}{
		{"body changed", `{"test": 2432232315}`, nil, specTimestamp, ErrNoMatch},
		{"id changed", specBody, func(h http.Header) { h.Set(HeaderID, "msg_other") }, specTimestamp, ErrNoMatch},
		{"timestamp changed", specBody, func(h http.Header) { h.Set(HeaderTimestamp, "1614265331") }, specTimestamp, ErrNoMatch},
		{"v2 only", specBody, func(h http.Header) { h.Set(HeaderSignature, strings.Replace(specSignature, "v1,", "v2,", 1)) }, specTimestamp, ErrNoMatch},
		{"missing id", specBody, func(h http.Header) { h.Del(HeaderID) }, specTimestamp, ErrMissingHeaders},
		{"missing signature", specBody, func(h http.Header) { h.Del(HeaderSignature) }, specTimestamp, ErrMissingHeaders},
		{"bad timestamp", specBody, func(h http.Header) { h.Set(HeaderTimestamp, "yesterday") }, specTimestamp, ErrBadTimestamp},
		{"too old", specBody, nil, specTimestamp + 301, ErrTooOld},
		{"too new", specBody, nil, specTimestamp - 301, ErrTooNew},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := specHeaders()
			if c.edit != nil {
				c.edit(h)
			}
			v.now = fixedNow(c.now)
			if _, err := v.Verify([]byte(c.body), h); !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestVerifyAcceptsAnyOfSeveralSignatures(t *testing.T) {
	v, _ := NewVerifier(specSecret, 0, fixedNow(specTimestamp))
	h := specHeaders()
	h.Set(HeaderSignature, "v1,Zm9yZ2VkCg== v1a,abc "+specSignature)
	if _, err := v.Verify([]byte(specBody), h); err != nil {
		t.Fatalf("Verify with a rotated-key list: %v", err)
	}
	// Exactly at the tolerance is still accepted.
	v.now = fixedNow(specTimestamp + 300)
	if _, err := v.Verify([]byte(specBody), specHeaders()); err != nil {
		t.Fatalf("at the tolerance edge: %v", err)
	}
}

func TestParseSecret(t *testing.T) {
	if _, err := ParseSecret(strings.TrimPrefix(specSecret, SecretPrefix)); err != nil {
		t.Errorf("a secret without the prefix: %v", err)
	}
	for _, bad := range []string{"", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="} {
		_, err := ParseSecret(bad)
		if err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
			continue
		}
		if bad != "" && len(bad) > len(SecretPrefix) && strings.Contains(err.Error(), strings.TrimPrefix(bad, SecretPrefix)) {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
}
