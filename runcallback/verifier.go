// Package runcallback verifies and parses the POST that Zapier sends to a
// partner's callback_url when an action run reaches a terminal state
// (zapier-api-2026.md §2.3–2.4, §7 row 8).
//
// Zapier signs the callback with a JWT in the Zapier-Callback-Signature
// header. The JWKS URL is not documented, so it is configuration. Nothing
// known binds the JWT to the body, so callers should de-duplicate on the run
// id and, for high-value flows, confirm the run with GET /v2/action-runs/{id}.
//
// The package is plain Go: it does not import Caddy.
package runcallback

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SignatureHeader is the request header that carries the callback JWT.
const SignatureHeader = "Zapier-Callback-Signature"

// Errors returned by Verify. Every error from Verify wraps exactly one of
// them: answer 401 for ErrInvalidSignature and 503 for ErrKeysUnavailable
// (Zapier retries 5xx, not 4xx).
var (
	// ErrInvalidSignature: the token is malformed, forged, expired, signed
	// with an unknown or unsuitable key, or fails a claim check.
	ErrInvalidSignature = errors.New("runcallback: invalid callback signature")
	// ErrKeysUnavailable: the JWKS could not be fetched or holds no usable
	// key, so no decision about the token was possible.
	ErrKeysUnavailable = errors.New("runcallback: callback signing keys unavailable")
)

// AllowedAlgorithms are the only JWS algorithms Verify accepts. Symmetric
// (HS*) and "none" are never accepted: the keys come from a public JWKS.
var AllowedAlgorithms = []string{
	"RS256", "RS384", "RS512",
	"ES256", "ES384", "ES512",
	"PS256", "PS384", "PS512",
}

// Defaults for zero VerifierConfig fields.
const (
	DefaultLeeway          = 60 * time.Second
	DefaultMaxLifetime     = 5 * time.Minute // Zapier: valid 5 minutes from issuance
	DefaultJWKSMaxAge      = 10 * time.Minute
	DefaultRefetchInterval = 30 * time.Second
	DefaultHTTPTimeout     = 10 * time.Second
)

// maxTokenBytes bounds the header value we are willing to parse; real
// callback JWTs are well under 2 KiB.
const maxTokenBytes = 16 << 10

// VerifierConfig configures a Verifier. Zero durations take the defaults.
type VerifierConfig struct {
	// JWKSURL is Zapier's callback-signing JWKS (absolute http or https URL).
	JWKSURL string
	// HTTPClient fetches the JWKS; nil means a client with DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// MaxLifetime refuses tokens whose exp-iat exceeds it (plus Leeway).
	MaxLifetime time.Duration
	// Issuer and Audience are checked only when non-empty.
	Issuer, Audience string
	// RequireSubject refuses a token without "sub": a token that names no
	// run could complete any run (BindsRun). Callers should set it unless
	// the signer is known to omit sub.
	RequireSubject bool
	// JWKSMaxAge is how long a fetched JWKS is used before it is refreshed.
	// If a refresh fails, the old keys stay usable for one more JWKSMaxAge.
	JWKSMaxAge time.Duration
	// RefetchInterval is the minimum gap between JWKS fetches triggered by an
	// unknown kid or following a failed fetch, so forged kids or a broken
	// JWKS endpoint cannot make the verifier hammer the URL.
	RefetchInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Claims are the verified claims of a callback JWT.
type Claims struct {
	Subject   string    // "sub"; may be empty (Zapier documents no run-id claim)
	IssuedAt  time.Time // "iat" (always present after Verify)
	Expiry    time.Time // "exp" (always present after Verify)
	ID        string    // "jti", if present
	Issuer    string    // "iss", if present
	Audience  []string  // "aud", if present
	KeyID     string    // header "kid" of the key that verified the token
	Algorithm string    // header "alg"
}

// Verifier checks Zapier-Callback-Signature JWTs against a cached JWKS. It is
// safe for concurrent use.
type Verifier struct {
	cfg    VerifierConfig
	parser *jwt.Parser
	keys   keyCache
}

// NewVerifier validates cfg, applies defaults and returns a Verifier. It does
// not fetch the JWKS; the first Verify does.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil {
		return nil, fmt.Errorf("runcallback: JWKS URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("runcallback: JWKS URL must be an absolute http or https URL, got %q", u.Redacted())
	}
	for name, d := range map[string]time.Duration{
		"Leeway": cfg.Leeway, "MaxLifetime": cfg.MaxLifetime,
		"JWKSMaxAge": cfg.JWKSMaxAge, "RefetchInterval": cfg.RefetchInterval,
	} {
		if d < 0 {
			return nil, fmt.Errorf("runcallback: %s must not be negative", name)
		}
	}
	setDefault(&cfg.Leeway, DefaultLeeway)
	setDefault(&cfg.MaxLifetime, DefaultMaxLifetime)
	setDefault(&cfg.JWKSMaxAge, DefaultJWKSMaxAge)
	setDefault(&cfg.RefetchInterval, DefaultRefetchInterval)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(AllowedAlgorithms),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), // rejects iat in the future (beyond leeway)
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v := &Verifier{cfg: cfg, parser: jwt.NewParser(opts...)}
	v.keys.cfg = &v.cfg
	return v, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Verify checks signature (the Zapier-Callback-Signature header value) and
// returns its claims. Errors wrap ErrInvalidSignature or ErrKeysUnavailable
// and never contain the token itself. ctx bounds only this caller's wait for
// a JWKS fetch; a fetch shared with other callers continues without it.
func (v *Verifier) Verify(ctx context.Context, signature string) (Claims, error) {
	signature = strings.TrimSpace(signature)
	hdr, err := peekHeader(signature)
	if err != nil {
		return Claims{}, err
	}

	// The keyfunc runs only after golang-jwt has checked the alg allow-list;
	// its own error is kept so key-fetch failures are reported unmangled.
	var keyErr error
	keyfunc := func(t *jwt.Token) (any, error) {
		// Cannot happen; guards against the two header decoders drifting.
		if t.Method.Alg() != hdr.Alg || t.Header["kid"] != hdr.Kid {
			keyErr = invalid("header read differently by the two decoders")
			return nil, keyErr
		}
		k, err := v.keys.lookup(ctx, hdr.Kid)
		if err == nil {
			err = k.fits(hdr.Alg)
		}
		keyErr = err
		return k.pub, err
	}

	var rc jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(signature, &rc, keyfunc); err != nil {
		if keyErr != nil {
			return Claims{}, keyErr
		}
		return Claims{}, invalidFromJWT(err)
	}

	// golang-jwt checks iat only when present; Zapier always sends it and the
	// lifetime check needs it.
	if rc.IssuedAt == nil {
		return Claims{}, invalid("missing iat claim")
	}
	iat, exp := rc.IssuedAt.Time, rc.ExpiresAt.Time
	if exp.Before(iat) {
		return Claims{}, invalid("exp is before iat")
	}
	if life := exp.Sub(iat); life > v.cfg.MaxLifetime+v.cfg.Leeway {
		return Claims{}, invalid(fmt.Sprintf("lifetime %s exceeds maximum %s", life, v.cfg.MaxLifetime))
	}
	if v.cfg.RequireSubject && rc.Subject == "" {
		return Claims{}, invalid("missing sub claim")
	}
	return Claims{
		Subject:   rc.Subject,
		IssuedAt:  iat,
		Expiry:    exp,
		ID:        rc.ID,
		Issuer:    rc.Issuer,
		Audience:  []string(rc.Audience),
		KeyID:     hdr.Kid,
		Algorithm: hdr.Alg,
	}, nil
}

// BindsRun reports whether verified claims may be used for runID: true when
// the token names no subject or names exactly runID. Zapier documents no
// run-id claim, but a subject that is present must match. An empty runID
// never matches.
func BindsRun(c Claims, runID string) bool {
	return runID != "" && (c.Subject == "" || c.Subject == runID)
}

type jwsHeader struct {
	Alg, Kid string
}

// peekHeader decodes the JOSE header before any key lookup, so tokens that
// can never pass (bad alg, no kid) are refused without touching the network,
// and so error messages can name the problem without echoing the token.
// Member names are matched exactly, as golang-jwt does (encoding/json struct
// decoding would also accept "ALG").
func peekHeader(token string) (jwsHeader, error) {
	var h jwsHeader
	switch {
	case token == "":
		return h, invalid("missing token")
	case len(token) > maxTokenBytes:
		return h, invalid(fmt.Sprintf("token longer than %d bytes", maxTokenBytes))
	case strings.Count(token, ".") != 2:
		return h, invalid("malformed token: not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(token[:strings.IndexByte(token, '.')])
	if err != nil {
		return h, invalid("malformed token: header is not base64url")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return h, invalid("malformed token: header is not a JSON object")
	}
	if json.Unmarshal(members["alg"], &h.Alg) != nil || h.Alg == "" {
		return h, invalid("missing alg header")
	}
	if !slices.Contains(AllowedAlgorithms, h.Alg) {
		return h, invalid(fmt.Sprintf("alg %s not allowed", clip(h.Alg)))
	}
	if json.Unmarshal(members["kid"], &h.Kid) != nil || h.Kid == "" {
		return h, invalid("missing kid header")
	}
	if _, ok := members["crit"]; ok {
		// RFC 7515 §4.1.11: unknown critical extensions must be refused; we
		// understand none.
		return h, invalid("crit header not supported")
	}
	return h, nil
}

func invalid(detail string) error {
	return fmt.Errorf("%w: %s", ErrInvalidSignature, detail)
}

// invalidFromJWT maps a golang-jwt error onto ErrInvalidSignature, keeping the
// jwt sentinel in the chain (errors.Is(err, jwt.ErrTokenExpired) works).
// Malformed-token details are dropped because they can quote token bytes.
func invalidFromJWT(err error) error {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return fmt.Errorf("%w: malformed token: %w", ErrInvalidSignature, jwt.ErrTokenMalformed)
	}
	return fmt.Errorf("%w: %w", ErrInvalidSignature, err)
}

// clip quotes an untrusted string for an error message, bounded in length.
func clip(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
