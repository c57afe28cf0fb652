package runcallback

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a JWKS response body.
const maxJWKSBytes = 1 << 20

// minRSABits refuses RSA keys too short to be trusted.
const minRSABits = 2048

// SkippedKey is a JWKS entry the verifier ignored, with the reason.
type SkippedKey struct {
	KeyID  string // "kid", may be empty
	Reason string
}

// SkippedKeys returns the entries of the most recently fetched JWKS that were
// ignored (private, symmetric, unsupported, malformed…), for logging.
func (v *Verifier) SkippedKeys() []SkippedKey {
	v.keys.mu.Lock()
	defer v.keys.mu.Unlock()
	return slices.Clone(v.keys.skipped)
}

// verifyKey is a usable public key from the JWKS.
type verifyKey struct {
	pub crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
	alg string           // the JWK's "alg", "" when it states none
}

// fits checks that the key may verify a token signed with alg: the JWK's
// own alg (if stated) must equal it, and the key type and curve must match.
func (k verifyKey) fits(alg string) error {
	if k.alg != "" && k.alg != alg {
		return invalid(fmt.Sprintf("token alg %s does not match key alg %s", alg, k.alg))
	}
	if !keyFitsAlg(k.pub, alg) {
		return invalid(fmt.Sprintf("token alg %s does not fit the key type", alg))
	}
	return nil
}

func keyFitsAlg(pub crypto.PublicKey, alg string) bool {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		return want != nil && pub.Curve == want
	}
	return false
}

// fetchCall is one JWKS fetch that any number of callers can wait on.
type fetchCall struct {
	done chan struct{}
	err  error
}

// keyCache holds the JWKS and coordinates fetches: at most one is in flight,
// and fetches caused by unknown kids or following a failure are spaced by
// RefetchInterval.
type keyCache struct {
	cfg *VerifierConfig

	mu        sync.Mutex
	keys      map[string]verifyKey // nil until the first successful fetch
	skipped   []SkippedKey
	fetchedAt time.Time // last successful fetch
	attemptAt time.Time // start of the last fetch, successful or not
	lastErr   error     // outcome of the last finished fetch
	inflight  *fetchCall
}

// lookup returns the key named kid, fetching the JWKS when it is missing,
// older than JWKSMaxAge, or lacks kid (rate limited).
func (c *keyCache) lookup(ctx context.Context, kid string) (verifyKey, error) {
	k, call, err := c.tryLocal(ctx, kid)
	if call == nil {
		return k, err
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return verifyKey{}, fmt.Errorf("%w: waiting for JWKS: %w", ErrKeysUnavailable, ctx.Err())
	}
	return c.afterFetch(kid, call.err)
}

// tryLocal answers from the cache when it can; otherwise it returns the fetch
// to wait for, starting one if none is in flight.
func (c *keyCache) tryLocal(ctx context.Context, kid string) (verifyKey, *fetchCall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	fresh := c.keys != nil && now.Sub(c.fetchedAt) < c.cfg.JWKSMaxAge
	if k, ok := c.keys[kid]; ok && fresh {
		return k, nil, nil
	}
	if c.inflight != nil {
		return verifyKey{}, c.inflight, nil
	}
	if now.Sub(c.attemptAt) < c.cfg.RefetchInterval {
		if c.lastErr != nil {
			// A fetch failed moments ago; answer from stale keys or with
			// that error rather than retrying at request rate.
			k, err := c.fromStaleLocked(now, kid, c.lastErr)
			return k, nil, err
		}
		if fresh {
			return verifyKey{}, nil, unknownKid(kid, true)
		}
	}
	return verifyKey{}, c.startFetchLocked(ctx, now), nil
}

// afterFetch answers once a fetch has finished; it never fetches again, so a
// token naming an unknown kid costs at most one fetch.
func (c *keyCache) afterFetch(kid string, fetchErr error) (verifyKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if fetchErr != nil {
		return c.fromStaleLocked(now, kid, fetchErr)
	}
	if k, ok := c.keys[kid]; ok {
		return k, nil
	}
	return verifyKey{}, unknownKid(kid, false)
}

// fromStaleLocked serves a key from a JWKS whose refresh failed, for up to
// one extra JWKSMaxAge, so a short JWKS outage does not reject every
// callback. An unknown kid then cannot be told from a rotation, so it is
// reported as keys unavailable (503: Zapier retries) rather than forged.
func (c *keyCache) fromStaleLocked(now time.Time, kid string, fetchErr error) (verifyKey, error) {
	if c.keys != nil && now.Sub(c.fetchedAt) < 2*c.cfg.JWKSMaxAge {
		if k, ok := c.keys[kid]; ok {
			return k, nil
		}
	}
	return verifyKey{}, fetchErr
}

func unknownKid(kid string, rateLimited bool) error {
	if rateLimited {
		return invalid(fmt.Sprintf("unknown kid %s (JWKS refetch rate-limited)", clip(kid)))
	}
	return invalid(fmt.Sprintf("unknown kid %s", clip(kid)))
}

// startFetchLocked launches a fetch detached from the caller's cancellation
// (other callers may join it) but keeping its values (tracing).
func (c *keyCache) startFetchLocked(ctx context.Context, now time.Time) *fetchCall {
	call := &fetchCall{done: make(chan struct{})}
	c.inflight, c.attemptAt = call, now
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultHTTPTimeout)
	go func() {
		defer cancel()
		keys, skipped, err := fetchJWKS(fctx, c.cfg.HTTPClient, c.cfg.JWKSURL)
		c.mu.Lock()
		if err == nil {
			c.keys, c.fetchedAt = keys, c.cfg.Now()
		}
		if err == nil || skipped != nil { // keep reasons for a set with no usable key
			c.skipped = skipped
		}
		c.lastErr, c.inflight, call.err = err, nil, err
		c.mu.Unlock()
		close(call.done)
	}()
	return call
}

// fetchJWKS downloads and parses the JWKS. All errors wrap ErrKeysUnavailable.
func fetchJWKS(ctx context.Context, client *http.Client, jwksURL string) (map[string]verifyKey, []SkippedKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: fetching JWKS: %w", ErrKeysUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%w: fetching JWKS: HTTP %d", ErrKeysUnavailable, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading JWKS: %w", ErrKeysUnavailable, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, nil, fmt.Errorf("%w: JWKS larger than %d bytes", ErrKeysUnavailable, maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, skipped, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	return keys, skipped, nil
}

// parseJWKS keeps the usable public signing keys and reports the rest. One
// bad entry does not spoil the set, but a set with no usable key is an error.
func parseJWKS(body []byte) (map[string]verifyKey, []SkippedKey, error) {
	var set map[string]json.RawMessage
	if err := json.Unmarshal(body, &set); err != nil || set == nil {
		return nil, nil, errors.New("JWKS is not a JSON object")
	}
	rawKeys, ok := set["keys"]
	if !ok || string(rawKeys) == "null" {
		return nil, nil, errors.New(`JWKS has no "keys" array`)
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(rawKeys, &entries); err != nil {
		return nil, nil, errors.New(`JWKS "keys" is not an array`)
	}
	keys := make(map[string]verifyKey)
	var skipped []SkippedKey
	for _, raw := range entries {
		kid, k, reason := parseJWK(raw)
		if reason == "" {
			if _, dup := keys[kid]; dup {
				reason = "duplicate kid; the first entry is used"
			} else {
				keys[kid] = k
				continue
			}
		}
		skipped = append(skipped, SkippedKey{KeyID: kid, Reason: reason})
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("JWKS has no usable signing key (%d skipped)", len(skipped))
	}
	return keys, skipped, nil
}

// privateMembers are JWK members that carry secret material (RFC 7518 §6).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// parseJWK returns the entry's kid and key, or a reason to skip it.
func parseJWK(raw json.RawMessage) (kid string, k verifyKey, reason string) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return "", k, "entry is not a JSON object"
	}
	var hdr struct {
		Kty, Kid, Use, Alg string
		KeyOps             []string `json:"key_ops"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return "", k, "kty, kid, use, alg or key_ops has the wrong JSON type"
	}
	kid = hdr.Kid
	switch {
	case kid == "":
		return kid, k, "no kid (tokens must name their key)"
	case hdr.Kty == "oct":
		return kid, k, "symmetric key (kty oct) cannot verify public signatures"
	case hdr.Kty != "RSA" && hdr.Kty != "EC":
		return kid, k, fmt.Sprintf("unsupported kty %s", clip(hdr.Kty))
	case hdr.Use != "" && hdr.Use != "sig":
		return kid, k, fmt.Sprintf("use is %s, not sig", clip(hdr.Use))
	case hdr.KeyOps != nil && !slices.Contains(hdr.KeyOps, "verify"):
		return kid, k, `key_ops lacks "verify"`
	case hdr.Alg != "" && !slices.Contains(AllowedAlgorithms, hdr.Alg):
		return kid, k, fmt.Sprintf("alg %s not allowed", clip(hdr.Alg))
	}
	for _, name := range privateMembers {
		if _, ok := m[name]; ok {
			// A published private key is compromised; never trust it.
			return kid, k, fmt.Sprintf("contains private key material (%q)", name)
		}
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return kid, k, "malformed key: " + strings.TrimPrefix(err.Error(), "go-jose/go-jose: ")
	}
	k = verifyKey{pub: jwk.Key, alg: hdr.Alg}
	switch pub := jwk.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return kid, k, fmt.Sprintf("RSA key of %d bits is below %d", pub.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey:
	default:
		return kid, k, fmt.Sprintf("unsupported key type %T", jwk.Key)
	}
	if hdr.Alg != "" && !keyFitsAlg(k.pub, hdr.Alg) {
		return kid, k, fmt.Sprintf("alg %s does not fit the key", hdr.Alg)
	}
	return kid, k, ""
}
