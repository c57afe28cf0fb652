package jwks

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Mint returns a compact JWT for (tenant, user), signed with the key active
// now. It takes no lock: one atomic load of the immutable key set.
func (m *Manager) Mint(tenant, user string) (string, error) {
	return m.MintWith(tenant, user, nil)
}

// MintWith is Mint with extra claims appended to the payload: extra is
// JSON object members, each preceded by a comma (`,"rate_limit":{…}`), or
// nil for none. The caller builds it once per configuration (see the
// actionclaims package) and must not repeat a claim Mint sets.
func (m *Manager) MintWith(tenant, user string, extra []byte) (string, error) {
	if tenant == "" || user == "" {
		return "", errors.New("jwks: mint needs a tenant and a user")
	}
	if !utf8.ValidString(tenant) || !utf8.ValidString(user) {
		return "", errors.New("jwks: tenant or user is not valid UTF-8")
	}
	now := m.now()
	k := signerAt(m.set.Load().keys, now)
	if k == nil {
		return "", errors.New("jwks: no signing key (Load has not succeeded)")
	}
	iat := now.Unix()

	claims := make([]byte, 0, 128+len(m.claimsPrefix)+len(tenant)+len(user)+len(extra))
	claims = append(claims, m.claimsPrefix...)
	claims = appendJSONString(claims, user)
	claims = append(claims, m.tenantField...)
	claims = appendJSONString(claims, tenant)
	claims = append(claims, `,"iat":`...)
	claims = strconv.AppendInt(claims, iat, 10)
	claims = append(claims, `,"nbf":`...)
	claims = strconv.AppendInt(claims, iat, 10)
	claims = append(claims, `,"exp":`...)
	claims = strconv.AppendInt(claims, iat+int64(m.cfg.TTL/time.Second), 10)
	claims = append(claims, extra...)
	claims = append(claims, '}')

	// Room for the signature: 2*66 bytes for ES512, 512 bytes for RSA-4096.
	tok := make([]byte, 0, len(k.header)+b64.EncodedLen(len(claims))+1+b64.EncodedLen(512))
	tok = append(tok, k.header...)
	tok = b64.AppendEncode(tok, claims)
	sig, err := k.method.Sign(string(tok), k.priv)
	if err != nil {
		return "", fmt.Errorf("jwks: sign with %s: %w", k.kid, err)
	}
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, sig)
	return string(tok), nil
}

// appendJSONString appends s as a JSON string; the common case (printable
// ASCII, nothing to escape) avoids encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return append(dst, jsonString(s)...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
