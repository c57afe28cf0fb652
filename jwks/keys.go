package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms lists the JWS algorithms Zapier accepts for partner JWTs.
var Algorithms = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512"}

// ValidAlg reports whether alg is one of Algorithms.
func ValidAlg(alg string) bool { return slices.Contains(Algorithms, alg) }

// rsaBits is the size of generated RSA keys. 2048 bits is what Zapier's
// example uses and keeps generation and signing cheap; RS* is only chosen for
// verifiers that cannot do EC, and 2048 is accepted everywhere.
const rsaBits = 2048

type algSpec struct {
	method jwt.SigningMethod
	curve  elliptic.Curve // nil for RSA
	crv    string
}

var algSpecs = map[string]algSpec{
	"ES256": {jwt.SigningMethodES256, elliptic.P256(), "P-256"},
	"ES384": {jwt.SigningMethodES384, elliptic.P384(), "P-384"},
	"ES512": {jwt.SigningMethodES512, elliptic.P521(), "P-521"},
	"RS256": {method: jwt.SigningMethodRS256},
	"RS384": {method: jwt.SigningMethodRS384},
	"RS512": {method: jwt.SigningMethodRS512},
}

// signingKey is one key of the set. It is immutable once built, so Mint can
// use it without locks; a change (e.g. promoting a next key) makes a copy.
type signingKey struct {
	kid         string
	alg         string
	createdAt   time.Time
	activatesAt time.Time
	der         []byte // PKCS#8, only ever written to storage
	priv        crypto.Signer
	method      jwt.SigningMethod
	header      []byte // base64url(JOSE header) + ".", precomputed for Mint
	jwk         publicJWK
}

// publicJWK has fields for public parameters only, so a private one can
// never reach the JWKS by construction.
type publicJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

var b64 = base64.RawURLEncoding

// generateKey creates a fresh private key for alg.
func generateKey(alg string, createdAt, activatesAt time.Time) (*signingKey, error) {
	spec, ok := algSpecs[alg]
	if !ok {
		return nil, fmt.Errorf("jwks: unsupported alg %q", alg)
	}
	var priv crypto.Signer
	var err error
	if spec.curve != nil {
		priv, err = ecdsa.GenerateKey(spec.curve, rand.Reader)
	} else {
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	}
	if err != nil {
		return nil, fmt.Errorf("jwks: generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("jwks: encode %s key: %w", alg, err)
	}
	return newSigningKey(alg, priv, der, createdAt, activatesAt)
}

// newSigningKey checks that priv fits alg and precomputes everything Mint
// and JWKS need. Errors never include key material.
func newSigningKey(alg string, priv crypto.Signer, der []byte, createdAt, activatesAt time.Time) (*signingKey, error) {
	spec, ok := algSpecs[alg]
	if !ok {
		return nil, fmt.Errorf("unsupported alg %q", alg)
	}
	jwk := publicJWK{Use: "sig", Alg: alg}
	var thumbInput string // RFC 7638: required members in lexicographic order
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if spec.curve == nil || k.Curve != spec.curve {
			return nil, fmt.Errorf("%s needs %s key, have EC key", alg, keyKind(spec))
		}
		// Bytes is 0x04 || X || Y with coordinates left-padded to the curve size (66 for P-521).
		point, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, errors.New("invalid EC public key")
		}
		size := (len(point) - 1) / 2
		jwk.Kty, jwk.Crv = "EC", spec.crv
		jwk.X, jwk.Y = b64.EncodeToString(point[1:1+size]), b64.EncodeToString(point[1+size:])
		thumbInput = `{"crv":"` + jwk.Crv + `","kty":"EC","x":"` + jwk.X + `","y":"` + jwk.Y + `"}`
	case *rsa.PrivateKey:
		if spec.curve != nil {
			return nil, fmt.Errorf("%s needs %s key, have RSA key", alg, keyKind(spec))
		}
		if k.N.BitLen() < rsaBits {
			return nil, fmt.Errorf("RSA key has %d bits, need at least %d", k.N.BitLen(), rsaBits)
		}
		jwk.Kty = "RSA"
		jwk.N = b64.EncodeToString(k.N.Bytes())
		jwk.E = b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())
		thumbInput = `{"e":"` + jwk.E + `","kty":"RSA","n":"` + jwk.N + `"}`
	default:
		return nil, fmt.Errorf("%s needs %s key, have %T", alg, keyKind(spec), priv)
	}
	sum := sha256.Sum256([]byte(thumbInput))
	jwk.Kid = b64.EncodeToString(sum[:])

	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, jwk.Kid, "JWT"})
	if err != nil {
		return nil, err
	}
	return &signingKey{
		kid:         jwk.Kid,
		alg:         alg,
		createdAt:   createdAt,
		activatesAt: activatesAt,
		der:         der,
		priv:        priv,
		method:      spec.method,
		header:      append(b64.AppendEncode(nil, header), '.'),
		jwk:         jwk,
	}, nil
}

func keyKind(spec algSpec) string {
	if spec.curve == nil {
		return "RSA"
	}
	return "EC " + spec.crv
}

// The persisted document. RetiresAt/DeletesAt are not stored: they follow
// from the successor's ActivatesAt, so they can never disagree with it.
const docVersion = 1

type document struct {
	Version int         `json:"version"`
	Keys    []storedKey `json:"keys"`
	// Revoked lists kids removed by Revoke. A key listed here is never
	// published again, even if a gateway that predates revocation writes it
	// back into Keys.
	Revoked []revokedKey `json:"revoked,omitempty"`
}

// revokedKey records one revocation. It holds no key material.
type revokedKey struct {
	KID       string    `json:"kid"`
	RevokedAt time.Time `json:"revoked_at"`
}

// maxRevoked bounds the revocation list kept in the document; the oldest
// entries go first. Kids are thumbprints of fresh keys, so a forgotten entry
// cannot be reused by accident.
const maxRevoked = 64

type storedKey struct {
	KID         string    `json:"kid"`
	Alg         string    `json:"alg"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatesAt time.Time `json:"activates_at"`
	PrivateKey  []byte    `json:"private_key"` // PKCS#8 DER; encoding/json writes standard base64
}

func encodeDocument(keys []*signingKey, revoked []revokedKey) ([]byte, error) {
	doc := document{Version: docVersion, Keys: make([]storedKey, len(keys)), Revoked: revoked}
	for i, k := range keys {
		doc.Keys[i] = storedKey{k.kid, k.alg, k.createdAt, k.activatesAt, k.der}
	}
	return json.MarshalIndent(doc, "", "\t")
}

// decodeDocument parses and checks a stored key set, sorted by ActivatesAt.
// known maps kid to already parsed keys, which are reused when their DER is
// unchanged (re-parsing RSA keys on every Maintain pass would be wasteful).
// Errors describe the problem but never echo key material.
func decodeDocument(data []byte, known map[string]*signingKey) ([]*signingKey, []revokedKey, error) {
	var doc document
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if doc.Version != docVersion {
		return nil, nil, fmt.Errorf("unsupported version %d (want %d)", doc.Version, docVersion)
	}
	isRevoked := make(map[string]bool, len(doc.Revoked))
	for i, r := range doc.Revoked {
		if r.KID == "" {
			return nil, nil, fmt.Errorf("revoked entry %d: empty kid", i)
		}
		isRevoked[r.KID] = true
	}
	keys := make([]*signingKey, 0, len(doc.Keys))
	seen := map[string]bool{}
	for i, sk := range doc.Keys {
		if seen[sk.KID] {
			return nil, nil, fmt.Errorf("key %d: duplicate kid %q", i, sk.KID)
		}
		seen[sk.KID] = true
		if isRevoked[sk.KID] {
			continue // written back by a gateway that missed the revocation
		}
		if sk.ActivatesAt.IsZero() {
			return nil, nil, fmt.Errorf("key %d (kid %q): missing activates_at", i, sk.KID)
		}
		if k := known[sk.KID]; k != nil && k.alg == sk.Alg && string(k.der) == string(sk.PrivateKey) {
			if !k.activatesAt.Equal(sk.ActivatesAt) || !k.createdAt.Equal(sk.CreatedAt) {
				c := *k
				c.createdAt, c.activatesAt = sk.CreatedAt, sk.ActivatesAt
				k = &c
			}
			keys = append(keys, k)
			continue
		}
		parsed, err := x509.ParsePKCS8PrivateKey(sk.PrivateKey)
		if err != nil {
			return nil, nil, fmt.Errorf("key %d (kid %q): private_key is not PKCS#8", i, sk.KID)
		}
		signer, ok := parsed.(crypto.Signer)
		if !ok {
			return nil, nil, fmt.Errorf("key %d (kid %q): unsupported key type %T", i, sk.KID, parsed)
		}
		k, err := newSigningKey(sk.Alg, signer, sk.PrivateKey, sk.CreatedAt, sk.ActivatesAt)
		if err != nil {
			return nil, nil, fmt.Errorf("key %d (kid %q): %w", i, sk.KID, err)
		}
		if k.kid != sk.KID {
			return nil, nil, fmt.Errorf("key %d: kid %q does not match its key's thumbprint", i, sk.KID)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("no keys")
	}
	sortKeys(keys)
	return keys, doc.Revoked, nil
}

// sortKeys orders by ActivatesAt. The sort is stable and new keys are
// appended, so of two keys activating at the same instant the newer signs.
func sortKeys(keys []*signingKey) {
	slices.SortStableFunc(keys, func(a, b *signingKey) int { return a.activatesAt.Compare(b.activatesAt) })
}
