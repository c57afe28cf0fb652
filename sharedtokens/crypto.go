package sharedtokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// Hash fields of a stored token.
const (
	fieldData        = "data"  // sealed token
	fieldFingerprint = "fp"    // HMAC of the token value, for Forget
	fieldFence       = "fence" // fence of the lease that published it
)

// sealVersion is the first byte of every sealed value, so the format can
// change without misreading old values. Version 1 bound only the identity;
// its values no longer open and are replaced by the next exchange.
const sealVersion = 2

// errUndecryptable is what a value sealed with another key (or tampered
// with) gives; it never says more.
var errUndecryptable = errors.New("sharedtokens: a stored token does not decrypt (is every gateway configured with the same key?)")

// keyring holds the subkeys derived from Config.Key, one per purpose, so
// that no key is used for two things.
type keyring struct {
	identityKey    []byte // HMAC of (namespace, tenant, user)
	fingerprintKey []byte // HMAC of token values
	aead           cipher.AEAD
}

func newKeyring(master []byte) keyring {
	derive := func(purpose string) []byte {
		k, err := hkdf.Key(sha256.New, master, nil, "caddy-zapier sharedtokens "+purpose, 32)
		if err != nil {
			panic(err) // only for lengths hkdf cannot produce
		}
		return k
	}
	block, err := aes.NewCipher(derive("aes-256-gcm"))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return keyring{identityKey: derive("identity"), fingerprintKey: derive("fingerprint"), aead: aead}
}

// mac writes each part length-prefixed, so ("ab","c") and ("a","bc") differ.
func mac(key []byte, parts ...string) []byte {
	var h hash.Hash = hmac.New(sha256.New, key)
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

// namespaceTag is the per-namespace part of every Redis key.
func (k keyring) namespaceTag(namespace string) string {
	return base64.RawURLEncoding.EncodeToString(mac(k.identityKey, "namespace", namespace)[:9])
}

// identity is the Redis name of an identity: an HMAC, never the raw ids.
func (k keyring) identity(key tokencache.Key) string {
	return base64.RawURLEncoding.EncodeToString(mac(k.identityKey, "identity", key.Tenant, key.User))
}

func (k keyring) fingerprint(id, token string) string {
	return base64.RawURLEncoding.EncodeToString(mac(k.fingerprintKey, id, token)[:16])
}

// stored is what Redis keeps for an identity, sealed.
type stored struct {
	Token    tokencache.Token
	Obtained time.Time // when the exchange started, to know the lifetime
}

// binding is what a sealed value is bound to, as AES-GCM additional data:
// the namespace (client id, issuer, … of the gateways sharing it), the
// identity's HMAC and the fence it was published with. A value moved to
// another identity, to another configuration sharing the Redis and key, or
// put back over a newer token (whose fence is higher) does not open.
type binding struct {
	namespace string
	id        string
	fence     int64
}

func (b binding) additionalData() []byte {
	ad := make([]byte, 0, 16+len(b.namespace)+len(b.id))
	for _, p := range []string{"sharedtokens v2", b.namespace, b.id} {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(p)))
		ad = append(ad, p...)
	}
	return binary.BigEndian.AppendUint64(ad, uint64(b.fence))
}

// seal encrypts s with AES-256-GCM: version | nonce | ciphertext, bound to at.
func (k keyring) seal(at binding, s stored) ([]byte, error) {
	plain := make([]byte, 16, 16+len(s.Token.Value))
	binary.BigEndian.PutUint64(plain[0:], uint64(s.Token.Expiry.UnixNano()))
	binary.BigEndian.PutUint64(plain[8:], uint64(s.Obtained.UnixNano()))
	plain = append(plain, s.Token.Value...)

	out := make([]byte, 1+k.aead.NonceSize(), 1+k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, out[1:], plain, at.additionalData()), nil
}

func (k keyring) open(at binding, sealed []byte) (stored, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < 1+ns || sealed[0] != sealVersion {
		return stored{}, errUndecryptable
	}
	plain, err := k.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], at.additionalData())
	if err != nil || len(plain) < 16 {
		return stored{}, errUndecryptable
	}
	return stored{
		Token: tokencache.Token{
			Value:  string(plain[16:]),
			Expiry: time.Unix(0, int64(binary.BigEndian.Uint64(plain[0:]))),
		},
		Obtained: time.Unix(0, int64(binary.BigEndian.Uint64(plain[8:]))),
	}, nil
}
