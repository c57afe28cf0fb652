package connect

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
)

// MaxKeyPart is the longest encoded key part; longer ids are hashed so that
// every part stays a valid file name on every storage backend.
const MaxKeyPart = 100

// keyPartEncoding is lower-case base32 (hex alphabet, no padding): only
// [0-9a-v], so parts are the same on case-insensitive file systems and can
// never be "." or "..", or contain "/".
var keyPartEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// StorageKeyPart encodes an arbitrary id (slashes, "..", unicode, kilobytes)
// as one safe storage key part. The "b" and "h" prefixes keep the plain and
// hashed forms apart, so the encoding stays injective.
func StorageKeyPart(id string) string {
	if enc := keyPartEncoding.EncodeToString([]byte(id)); len(enc) < MaxKeyPart {
		return "b" + enc
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:])
}

// IsKeyPart reports whether name is an output of StorageKeyPart.
func IsKeyPart(name string) bool {
	if len(name) < 1 || (name[0] != 'b' && name[0] != 'h') {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}
