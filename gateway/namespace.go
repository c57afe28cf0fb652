package gateway

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// Identity is one end user: (tenant, user), as the trusted headers name it.
type Identity = tokencache.Key

// NamesKeySource gives the key that names identities in shared storage. It
// is the same on every gateway sharing the storage (it lives there), so
// every gateway computes the same names; reading the storage without it
// does not tell whose data is whose.
type NamesKeySource interface {
	NamesKey(ctx context.Context) ([]byte, error)
}

// NamesKeyFunc adapts a function to NamesKeySource.
type NamesKeyFunc func(ctx context.Context) ([]byte, error)

// NamesKey calls f.
func (f NamesKeyFunc) NamesKey(ctx context.Context) ([]byte, error) { return f(ctx) }

// Namespace is the one way per-user data is named and attributed at rest:
// storage names are keyed hashes of the identity (Name), and a record that
// must be mapped back to its owner carries it sealed (SealOwner), never in
// clear and never in a reversible encoding. Formats are those connection
// records have used since keyed names: changing them orphans stored data.
type Namespace struct {
	keys NamesKeySource
}

// NewNamespace returns the namespace over keys.
func NewNamespace(keys NamesKeySource) *Namespace { return &Namespace{keys: keys} }

// Subject is the keyed hash of the identity: HMAC-SHA256 of
// tenant NUL user under the names key (identity values cannot contain NUL,
// so the join is unambiguous).
func (n *Namespace) Subject(ctx context.Context, id Identity) ([]byte, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return nil, err
	}
	return Subject(key, id), nil
}

// Subject is Namespace.Subject for a names key already at hand.
func Subject(namesKey []byte, id Identity) []byte {
	m := hmac.New(sha256.New, namesKey)
	m.Write([]byte(id.Tenant))
	m.Write([]byte{0})
	m.Write([]byte(id.User))
	return m.Sum(nil)
}

// Name is the identity's storage key part: "k" and 64 lower-case hex digits.
func (n *Namespace) Name(ctx context.Context, id Identity) (string, error) {
	sum, err := n.Subject(ctx, id)
	if err != nil {
		return "", err
	}
	return "k" + hex.EncodeToString(sum), nil
}

// TenantName is a tenant's storage key part: "t" and 64 hex digits of a
// keyed hash apart from every identity's.
func (n *Namespace) TenantName(ctx context.Context, tenant string) (string, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("tenant\x00"))
	m.Write([]byte(tenant))
	return "t" + hex.EncodeToString(m.Sum(nil)), nil
}

// IsName reports whether s has the shape of a Name.
func IsName(s string) bool {
	if len(s) != 65 || s[0] != 'k' {
		return false
	}
	_, err := hex.DecodeString(s[1:])
	return err == nil
}

// ownerLabel derives the owner-sealing key; connection records have used it
// since owners were sealed, so every sealed owner opens with one key.
const ownerLabel = "caddy-zapier connection owner v1"

// OwnerAEAD is the AEAD that seals owners, derived from the names key.
func OwnerAEAD(namesKey []byte) (cipher.AEAD, error) { return derivedAEAD(namesKey, ownerLabel) }

// derivedAEAD is AES-256-GCM under HMAC(namesKey, label): one key per use,
// the same on every gateway sharing the storage.
func derivedAEAD(namesKey []byte, label string) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, namesKey)
	m.Write([]byte(label))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal seals data that names or belongs to a user (a dead letter's event
// body) under a key derived for label, bound to aad; base64url of
// nonce‖ciphertext.
func (n *Namespace) Seal(ctx context.Context, label string, plain, aad []byte) (string, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return "", err
	}
	aead, err := derivedAEAD(key, label)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, aad)), nil
}

// ErrSealed is returned for sealed data that does not open.
var ErrSealed = errors.New("gateway: sealed data does not open")

// Open opens what Seal sealed with the same label and aad.
func (n *Namespace) Open(ctx context.Context, label, sealed string, aad []byte) ([]byte, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return nil, err
	}
	aead, err := derivedAEAD(key, label)
	if err != nil {
		return nil, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(raw) < aead.NonceSize() {
		return nil, ErrSealed
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], aad)
	if err != nil {
		return nil, ErrSealed
	}
	return plain, nil
}

type sealedOwner struct {
	Tenant string `json:"t"`
	User   string `json:"u"`
}

// SealOwner seals id for a record; aad binds the sealed owner to the record
// (its id, its kind), so it cannot be moved to another record.
func (n *Namespace) SealOwner(ctx context.Context, id Identity, aad []byte) (string, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return "", err
	}
	aead, err := OwnerAEAD(key)
	if err != nil {
		return "", err
	}
	return SealOwnerWith(aead, id, aad)
}

// SealOwnerWith is SealOwner with the AEAD at hand.
func SealOwnerWith(aead cipher.AEAD, id Identity, aad []byte) (string, error) {
	plain, _ := json.Marshal(sealedOwner{Tenant: id.Tenant, User: id.User})
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, aad)), nil
}

// ErrOwnerSealed is returned for a sealed owner that does not open: sealed
// under another key, bound to another record, or not a sealed owner.
var ErrOwnerSealed = errors.New("gateway: sealed owner does not open")

// OpenOwner opens a sealed owner.
func (n *Namespace) OpenOwner(ctx context.Context, sealed string, aad []byte) (Identity, error) {
	key, err := n.keys.NamesKey(ctx)
	if err != nil {
		return Identity{}, err
	}
	aead, err := OwnerAEAD(key)
	if err != nil {
		return Identity{}, err
	}
	id, ok := OpenOwnerWith(aead, sealed, aad)
	if !ok {
		return Identity{}, ErrOwnerSealed
	}
	return id, nil
}

// OpenOwnerWith is OpenOwner with the AEAD at hand.
func OpenOwnerWith(aead cipher.AEAD, sealed string, aad []byte) (Identity, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(raw) < aead.NonceSize() {
		return Identity{}, false
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], aad)
	if err != nil {
		return Identity{}, false
	}
	var o sealedOwner
	if json.Unmarshal(plain, &o) != nil {
		return Identity{}, false
	}
	return Identity{Tenant: o.Tenant, User: o.User}, true
}
