package fakezapier

// The Zapier-Callback-Signature JWT (zapier-api-2026.md §2.4) and the JWK Set
// that verifies it. Zapier documents a JWT with iat and exp, valid 5 minutes,
// checked against a JWKS whose URL and algorithm it does not publish; the
// fake signs RS256 with a kid and adds sub = the run id. JOSE is written on
// the standard library, as in jwt.go.

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"sync"
	"time"
)

// CallbackJWKSPath is where the fake serves the JWK Set that verifies its
// callback signatures (Zapier's own URL is undocumented).
const CallbackJWKSPath = "/.well-known/jwks.json"

const callbackJWTLifetime = 5 * time.Minute

// callbackKeys are generated on first use rather than in New: RSA key
// generation costs tens of milliseconds and most Servers never sign.
type callbackKeys struct {
	once sync.Once
	key  *rsa.PrivateKey // the published key
	kid  string

	otherOnce sync.Once
	other     *rsa.PrivateKey // for CallbackUnknownKid and SendForgedCallback
}

func newRSAKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("fakezapier: rsa.GenerateKey: " + err.Error())
	}
	return k
}

func (k *callbackKeys) signing() (*rsa.PrivateKey, string) {
	k.once.Do(func() {
		k.key = newRSAKey()
		k.kid = "fz-callback-" + randomHex(8)
	})
	return k.key, k.kid
}

func (k *callbackKeys) unpublished() *rsa.PrivateKey {
	k.otherOnce.Do(func() { k.other = newRSAKey() })
	return k.other
}

// CallbackJWKS returns the JSON of the JWK Set served at CallbackJWKSPath.
func (s *Server) CallbackJWKS() []byte {
	key, kid := s.cb.keys.signing()
	b, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64u(key.N.Bytes()),
		"e": b64u(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		panic(err)
	}
	return b
}

func (s *Server) serveCallbackJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body := s.CallbackJWKS()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(append(body, '\n'))
	}
}

// callbackSignature is the Zapier-Callback-Signature value for a run under
// fault; "" means no header.
func (s *Server) callbackSignature(runID string, fault CallbackFault) string {
	key, kid := s.cb.keys.signing()
	iat := s.now().Unix()
	switch fault {
	case CallbackNoSignature:
		return ""
	case CallbackExpired:
		iat -= 2 * int64(callbackJWTLifetime/time.Second)
	case CallbackUnknownKid:
		key, kid = s.cb.keys.unpublished(), "fz-unknown-"+randomHex(8)
	}
	tok := signRS256(key, kid, runID, iat)
	if fault == CallbackBadSignature {
		tok = corruptSignature(tok)
	}
	return tok
}

// CallbackIssuer is the iss of the fake's callback signatures (Zapier
// documents none; a gateway must check an issuer or an audience).
const CallbackIssuer = "https://zapier.com"

// signRS256 returns a compact JWS with claims iss, iat, exp = iat + 300 and
// sub.
func signRS256(key *rsa.PrivateKey, kid, sub string, iat int64) string {
	return signClaims(key, kid, map[string]any{
		"iss": CallbackIssuer, "iat": iat, "exp": iat + int64(callbackJWTLifetime/time.Second), "sub": sub,
	})
}

// signClaims returns a compact RS256 JWS of claims.
func signClaims(key *rsa.PrivateKey, kid string, c map[string]any) string {
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	claims, _ := json.Marshal(c)
	input := b64u(header) + "." + b64u(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic("fakezapier: rsa.SignPKCS1v15: " + err.Error())
	}
	return input + "." + b64u(sig)
}

// corruptSignature flips bits in the middle of the signature, so that it
// still decodes to the right length and fails only the RSA check.
func corruptSignature(tok string) string {
	i := len(tok) - 1
	for tok[i] != '.' {
		i--
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) == 0 {
		panic("fakezapier: corruptSignature: malformed token")
	}
	sig[len(sig)/2] ^= 0xff
	return tok[:i+1] + b64u(sig)
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
