package fakezapier

// An independent verifier for the gateway's partner JWTs, written on the
// standard library only (no JOSE library), per zapier-api.md §1.6 and §2.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

const maxJWTLen = 16 << 10

type algInfo struct {
	hash  crypto.Hash
	kty   string
	crv   string         // EC only
	curve elliptic.Curve // EC only
	size  int            // EC: bytes per coordinate and per signature half
}

var jwsAlgs = map[string]algInfo{
	"RS256": {hash: crypto.SHA256, kty: "RSA"},
	"RS384": {hash: crypto.SHA384, kty: "RSA"},
	"RS512": {hash: crypto.SHA512, kty: "RSA"},
	"ES256": {hash: crypto.SHA256, kty: "EC", crv: "P-256", curve: elliptic.P256(), size: 32},
	"ES384": {hash: crypto.SHA384, kty: "EC", crv: "P-384", curve: elliptic.P384(), size: 48},
	"ES512": {hash: crypto.SHA512, kty: "EC", crv: "P-521", curve: elliptic.P521(), size: 66},
}

// verifiedJWT is what the token endpoint needs from a valid partner JWT.
type verifiedJWT struct {
	tenant, user string
	alg, kid     string
	header       map[string]any
	claims       map[string]any
}

// verifyJWT checks a compact JWS partner JWT completely: structure, header,
// key from the JWKS, signature, then claims. The error text is a reason fit
// for logs and test diagnostics (it never contains the token).
func (s *Server) verifyJWT(token string) (*verifiedJWT, error) {
	if len(token) > maxJWTLen {
		return nil, fmt.Errorf("JWT longer than %d bytes", maxJWTLen)
	}
	parts := strings.Split(token, ".")
	switch len(parts) {
	case 3:
	case 5:
		return nil, errors.New("JWE (encrypted JWT) not accepted; expected a compact JWS")
	default:
		return nil, fmt.Errorf("not a compact JWS: %d dot-separated parts, want 3", len(parts))
	}
	headerJSON, err := b64url(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	payloadJSON, err := b64url(parts[1])
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	sig, err := b64url(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}

	var header map[string]json.RawMessage
	if err := json.Unmarshal(headerJSON, &header); err != nil || header == nil {
		return nil, errors.New("header is not a JSON object")
	}
	alg, err := memberString(header, "alg", true)
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	info, ok := jwsAlgs[alg]
	if !ok {
		switch {
		case strings.EqualFold(alg, "none"):
			return nil, fmt.Errorf("alg %q refused: unsigned JWTs are not accepted", alg)
		case strings.HasPrefix(alg, "HS"):
			return nil, fmt.Errorf("alg %q refused: symmetric algorithms are not accepted", alg)
		default:
			return nil, fmt.Errorf("alg %q not supported (want RS256/384/512 or ES256/384/512)", alg)
		}
	}
	kid, err := memberString(header, "kid", true)
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if kid == "" {
		return nil, errors.New(`header: "kid" is empty`)
	}
	if typ, err := memberString(header, "typ", false); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	} else if typ != "" && !strings.EqualFold(typ, "JWT") {
		return nil, fmt.Errorf("header: typ %q, want \"JWT\"", typ)
	}
	if _, ok := header["crit"]; ok {
		return nil, errors.New(`header: "crit" present; no critical extensions are supported`)
	}

	jwk, set, err := s.jwks.key(kid)
	if err != nil {
		return nil, err
	}
	if set.problem != "" {
		return nil, errors.New(set.problem)
	}
	pub, err := jwkPublicKey(jwk, kid, alg, info)
	if err != nil {
		return nil, err
	}
	signingInput := []byte(parts[0] + "." + parts[1])
	if err := verifySignature(pub, info, signingInput, sig); err != nil {
		return nil, fmt.Errorf("%s signature with kid %q: %v", alg, kid, err)
	}

	v, err := s.checkClaims(payloadJSON)
	if err != nil {
		return nil, err
	}
	v.alg, v.kid = alg, kid
	_ = json.Unmarshal(headerJSON, &v.header)
	_ = json.Unmarshal(payloadJSON, &v.claims) // numbers as float64, for callers

	return v, nil
}

// b64url decodes unpadded base64url strictly: no padding, no whitespace, no
// non-zero trailing bits.
func b64url(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("invalid base64url character %q", c)
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid base64url: %v", err)
	}
	return b, nil
}

func memberString(m map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := m[name]
	if !ok {
		if required {
			return "", fmt.Errorf("%q missing", name)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%q is not a string", name)
	}
	return s, nil
}

// jwkPublicKey validates a JWK against the header alg and builds the key.
func jwkPublicKey(k map[string]json.RawMessage, kid, alg string, info algInfo) (crypto.PublicKey, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("JWKS key %q: %s", kid, fmt.Sprintf(format, args...))
	}
	for _, m := range privateJWKMembers {
		if _, ok := k[m]; ok {
			return nil, bad("publishes private member %q", m)
		}
	}
	kty, err := memberString(k, "kty", true)
	if err != nil {
		return nil, bad("%v", err)
	}
	if kty != info.kty {
		return nil, bad("kty %q cannot verify alg %s (want %q)", kty, alg, info.kty)
	}
	if use, err := memberString(k, "use", false); err != nil {
		return nil, bad("%v", err)
	} else if _, present := k["use"]; present && use != "sig" {
		return nil, bad("use %q, want \"sig\"", use)
	}
	if kalg, err := memberString(k, "alg", false); err != nil {
		return nil, bad("%v", err)
	} else if _, present := k["alg"]; present && kalg != alg {
		return nil, bad("alg %q does not match JWT header alg %q", kalg, alg)
	}
	if raw, ok := k["key_ops"]; ok {
		var ops []string
		if err := json.Unmarshal(raw, &ops); err != nil {
			return nil, bad(`"key_ops" is not an array of strings`)
		}
		found := false
		for _, op := range ops {
			found = found || op == "verify"
		}
		if !found {
			return nil, bad(`key_ops %q lacks "verify"`, ops)
		}
	}
	member := func(name string) ([]byte, error) {
		s, err := memberString(k, name, true)
		if err != nil {
			return nil, bad("%v", err)
		}
		b, err := b64url(s)
		if err != nil {
			return nil, bad("%q: %v", name, err)
		}
		if len(b) == 0 {
			return nil, bad("%q is empty", name)
		}
		return b, nil
	}
	switch kty {
	case "RSA":
		n, err := member("n")
		if err != nil {
			return nil, err
		}
		e, err := member("e")
		if err != nil {
			return nil, err
		}
		N := new(big.Int).SetBytes(n)
		if N.BitLen() < 2048 {
			return nil, bad("RSA modulus is %d bits, want at least 2048", N.BitLen())
		}
		if len(e) > 4 {
			return nil, bad("RSA exponent too large")
		}
		E := int(new(big.Int).SetBytes(e).Int64())
		if E < 3 || E%2 == 0 {
			return nil, bad("RSA exponent %d invalid", E)
		}
		return &rsa.PublicKey{N: N, E: E}, nil
	case "EC":
		crv, err := memberString(k, "crv", true)
		if err != nil {
			return nil, bad("%v", err)
		}
		if crv != info.crv {
			return nil, bad("crv %q cannot verify alg %s (want %q)", crv, alg, info.crv)
		}
		x, err := member("x")
		if err != nil {
			return nil, err
		}
		y, err := member("y")
		if err != nil {
			return nil, err
		}
		if len(x) != info.size || len(y) != info.size {
			return nil, bad("%s coordinates must be %d bytes each (RFC 7518 §6.2.1.2), got x=%d y=%d", crv, info.size, len(x), len(y))
		}
		pt := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(info.curve, pt)
		if err != nil {
			return nil, bad("invalid %s point: %v", crv, err)
		}
		return pub, nil
	}
	return nil, bad("unsupported kty %q", kty)
}

func digest(h crypto.Hash, msg []byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:]
	}
	panic("fakezapier: unexpected hash")
}

func verifySignature(pub crypto.PublicKey, info algInfo, msg, sig []byte) error {
	hashed := digest(info.hash, msg)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if len(sig) != k.Size() {
			return fmt.Errorf("RSA signature is %d bytes, want %d", len(sig), k.Size())
		}
		if err := rsa.VerifyPKCS1v15(k, info.hash, hashed, sig); err != nil {
			return errors.New("bad signature")
		}
		return nil
	case *ecdsa.PublicKey:
		// JWS ECDSA signatures are raw R||S, each half zero-padded to the
		// curve size (RFC 7518 §3.4), never ASN.1 DER.
		if len(sig) != 2*info.size {
			return fmt.Errorf("ECDSA signature is %d bytes, want %d (raw R||S, not DER)", len(sig), 2*info.size)
		}
		r := new(big.Int).SetBytes(sig[:info.size])
		sv := new(big.Int).SetBytes(sig[info.size:])
		if !ecdsa.Verify(k, hashed, r, sv) {
			return errors.New("bad signature")
		}
		return nil
	}
	return errors.New("unsupported key type")
}

// checkClaims validates the payload per zapier-api.md §1.6.
func (s *Server) checkClaims(payload []byte) (*verifiedJWT, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, errors.New("payload is not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("payload has trailing data")
	}
	cfg := &s.cfg

	iss, ok := claims["iss"].(string)
	switch {
	case !ok || iss == "":
		return nil, errors.New(`claim "iss" missing or not a non-empty string`)
	case cfg.Issuer != "" && iss != cfg.Issuer:
		return nil, fmt.Errorf("iss %q, want %q", iss, cfg.Issuer)
	}

	if err := checkAudience(claims["aud"], cfg.Audience); err != nil {
		return nil, err
	}

	times := map[string]time.Time{}
	for _, name := range []string{"iat", "nbf", "exp"} {
		t, err := numericDate(claims, name)
		if err != nil {
			return nil, err
		}
		times[name] = t
	}
	iat, nbf, exp := times["iat"], times["nbf"], times["exp"]
	now := s.now()
	switch {
	case !exp.After(now):
		return nil, fmt.Errorf("expired: exp %s is not after now %s", fmtTime(exp), fmtTime(now))
	case nbf.After(now.Add(cfg.ClockSkew)):
		return nil, fmt.Errorf("not yet valid: nbf %s is after now %s + skew %s", fmtTime(nbf), fmtTime(now), cfg.ClockSkew)
	case iat.After(now.Add(cfg.ClockSkew)):
		return nil, fmt.Errorf("issued in the future: iat %s is after now %s + skew %s", fmtTime(iat), fmtTime(now), cfg.ClockSkew)
	case !exp.After(iat):
		return nil, fmt.Errorf("exp %s is not after iat %s", fmtTime(exp), fmtTime(iat))
	case !exp.After(nbf):
		return nil, fmt.Errorf("exp %s is not after nbf %s", fmtTime(exp), fmtTime(nbf))
	case exp.Sub(iat) > cfg.MaxJWTLifetime:
		return nil, fmt.Errorf("lifetime exp-iat %s exceeds the maximum %s", exp.Sub(iat), cfg.MaxJWTLifetime)
	}

	userClaim, tenantClaim := s.claimNames()
	user, ok := claims[userClaim].(string)
	if !ok || user == "" {
		return nil, fmt.Errorf("user claim %q missing or not a non-empty string", userClaim)
	}
	tenant, ok := claims[tenantClaim].(string)
	if !ok || tenant == "" {
		return nil, fmt.Errorf("tenant claim %q missing or not a non-empty string", tenantClaim)
	}
	return &verifiedJWT{tenant: tenant, user: user}, nil
}

func checkAudience(v any, want string) error {
	switch aud := v.(type) {
	case string:
		if aud == want {
			return nil
		}
		return fmt.Errorf("aud %q, want %q", aud, want)
	case []any:
		for _, a := range aud {
			if _, ok := a.(string); !ok {
				return errors.New(`claim "aud" array has a non-string member`)
			}
		}
		for _, a := range aud {
			if a.(string) == want {
				return nil
			}
		}
		return fmt.Errorf("aud %v does not contain %q", aud, want)
	case nil:
		return errors.New(`claim "aud" missing`)
	}
	return errors.New(`claim "aud" is neither a string nor an array of strings`)
}

func numericDate(claims map[string]any, name string) (time.Time, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, fmt.Errorf("claim %q missing", name)
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("claim %q is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("claim %q is not a valid NumericDate", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
