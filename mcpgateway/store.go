// Package mcpgateway is the gateway's White Label MCP core (issue 17), in
// plain Go: per-(tenant, user, app) MCP tokens encrypted at rest, refreshed
// at most once at a time per key, and a faithful Streamable HTTP proxy to
// each app's Zapier-hosted MCP server that injects the user's token.
//
// It does not import Caddy: the adapter in caddymodule hands it a storage
// (any certmagic.Storage fits KV), the refresh call and the error rendering.
package mcpgateway

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Identity is the end user a request acts for.
type Identity struct{ Tenant, User string }

// KV is the part of a storage the token store needs. Load returns an error
// wrapping fs.ErrNotExist for a missing key. certmagic.Storage satisfies it.
type KV interface {
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string, recursive bool) ([]string, error)
}

// Locker is a lock shared by every gateway that uses the same storage
// (certmagic.Storage has it). Lock blocks until the named lock is held or
// ctx ends.
type Locker interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
}

// Record is what the gateway keeps for one (tenant, user, app): the MCP
// tokens and where to use them. It is stored only encrypted.
type Record struct {
	App          string    `json:"app"`
	Title        string    `json:"title,omitempty"`
	ServerURL    string    `json:"server_url"`
	Resource     string    `json:"resource,omitempty"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Scope        string    `json:"scope,omitempty"`
	Expiry       time.Time `json:"expiry"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	// Owner is the record's (tenant, user), sealed by the gateway's
	// Namespace (Store.Owners) with the storage key as additional data, so
	// a tenant's records can be found without naming anyone in clear.
	// Records from before it get one when next read.
	Owner string `json:"owner,omitempty"`
}

// String never prints a token.
func (r Record) String() string {
	return fmt.Sprintf("mcpgateway.Record{App:%q ServerURL:%q Expiry:%s HasRefresh:%t}",
		r.App, r.ServerURL, r.Expiry.Format(time.RFC3339), r.RefreshToken != "")
}

// GoString redacts like String.
func (r Record) GoString() string { return r.String() }

// recordVersion prefixes sealed records, so the format can change.
const recordVersion = "mcp1."

// Store keeps Records in a KV, sealed with AES-256-GCM under a key derived
// from the configured secret. The storage key names the user only by a
// keyed hash, and is the AEAD's additional data, so a record copied under
// another user's or app's key does not open.
type Store struct {
	kv      KV
	prefix  string
	aead    cipher.AEAD
	subject []byte
	// Owners, if set, seals each record's owner (Record.Owner), which
	// offboarding a whole tenant needs.
	Owners *gateway.Namespace
}

// NewStore derives the encryption and subject-hash keys from secret (at
// least 16 bytes) and stores under prefix (e.g. "zapier/mcp/tokens").
func NewStore(kv KV, secret []byte, prefix string) (*Store, error) {
	if len(secret) < 16 {
		return nil, errors.New("mcpgateway: the token key must be at least 16 bytes")
	}
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("caddy-zapier mcp " + label))
		return m.Sum(nil)
	}
	block, err := aes.NewCipher(derive("token encryption"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, prefix: strings.TrimRight(prefix, "/"), aead: aead, subject: derive("subject")}, nil
}

// Subject is the keyed hash naming an identity in storage keys.
func (s *Store) Subject(id Identity) string {
	m := hmac.New(sha256.New, s.subject)
	m.Write([]byte(id.Tenant))
	m.Write([]byte{0})
	m.Write([]byte(id.User))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24])
}

func (s *Store) userPrefix(id Identity) string { return s.prefix + "/" + s.Subject(id) }

// lockName names the storage lock of (id, app)'s record.
func (s *Store) lockName(id Identity, app string) string {
	return "zapier_mcp_token_" + s.Subject(id) + "_" + app
}

// storageKey is <prefix>/<subject>/<app>; app names are validated by the
// caller (letters, digits and _-.@:), so they are path-safe.
func (s *Store) storageKey(id Identity, app string) string {
	return s.userPrefix(id) + "/" + app
}

func (s *Store) seal(key string, rec *Record) ([]byte, error) {
	plain, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sealed := s.aead.Seal(nonce, nonce, plain, []byte(key))
	return []byte(recordVersion + base64.RawStdEncoding.EncodeToString(sealed)), nil
}

// errUnreadable marks a record that does not open: another key, or tampered.
var errUnreadable = errors.New("mcpgateway: stored MCP token record does not open with the configured key")

func (s *Store) open(key string, data []byte) (*Record, error) {
	raw, ok := strings.CutPrefix(strings.TrimSpace(string(data)), recordVersion)
	if !ok {
		return nil, errUnreadable
	}
	sealed, err := base64.RawStdEncoding.DecodeString(raw)
	if err != nil || len(sealed) < s.aead.NonceSize() {
		return nil, errUnreadable
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(key))
	if err != nil {
		return nil, errUnreadable
	}
	rec := new(Record)
	if err := json.Unmarshal(plain, rec); err != nil || rec.AccessToken == "" {
		return nil, errUnreadable
	}
	return rec, nil
}

// Get returns the record, or nil when there is none. A record that no
// longer opens (the token key changed) counts as none: the user authorizes
// again.
func (s *Store) Get(ctx context.Context, id Identity, app string) (*Record, error) {
	key := s.storageKey(id, app)
	data, err := s.kv.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading the MCP token record: %w", err)
	}
	rec, err := s.open(key, data)
	if errors.Is(err, errUnreadable) {
		return nil, nil
	}
	return rec, err
}

// Put stores rec for (id, rec.App).
func (s *Store) Put(ctx context.Context, id Identity, rec *Record) error {
	key := s.storageKey(id, rec.App)
	if s.Owners != nil {
		owner, err := s.Owners.SealOwner(ctx, gateway.Identity{Tenant: id.Tenant, User: id.User}, []byte(key))
		if err != nil {
			return fmt.Errorf("sealing the MCP token record's owner: %w", err)
		}
		rec.Owner = owner
	}
	data, err := s.seal(key, rec)
	if err != nil {
		return fmt.Errorf("sealing the MCP token record: %w", err)
	}
	if err := s.kv.Store(ctx, key, data); err != nil {
		return fmt.Errorf("storing the MCP token record: %w", err)
	}
	return nil
}

// Delete forgets (id, app); it reports whether there was a record.
func (s *Store) Delete(ctx context.Context, id Identity, app string) (bool, error) {
	key := s.storageKey(id, app)
	if _, err := s.kv.Load(ctx, key); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := s.kv.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("deleting the MCP token record: %w", err)
	}
	return true, nil
}

// List returns the user's readable records, sorted by app.
func (s *Store) List(ctx context.Context, id Identity) ([]Record, error) {
	keys, err := s.kv.List(ctx, s.userPrefix(id), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing MCP token records: %w", err)
	}
	var out []Record
	for _, key := range keys {
		data, err := s.kv.Load(ctx, key)
		if err != nil {
			continue
		}
		if rec, err := s.open(key, data); err == nil {
			out = append(out, *rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App < out[j].App })
	return out, nil
}
