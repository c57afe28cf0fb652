package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ForgetEntry is one offboarding as the other gateways sharing the storage
// apply it to their own token caches: the tenant's tokens (All), or its
// users'. Sealed in storage.
type ForgetEntry struct {
	Tenant string   `json:"t"`
	Users  []string `json:"u,omitempty"`
	All    bool     `json:"all,omitempty"`
}

// ForgetLogPrefix holds one sealed entry per offboarding; entries go after
// ForgetLogRetention (longer than any access token lives).
const (
	ForgetLogPrefix    = "zapier/forget-log"
	ForgetLogRetention = 24 * time.Hour
)

var forgetLogAAD = []byte("caddy-zapier forget log v1")

// Storage is the part of Caddy's storage (certmagic.Storage) the gateway's
// records use, with the same signatures, so any storage module satisfies it
// and the core imports no Caddy package.
type Storage interface {
	// Lock is a distributed lock across every process sharing the storage.
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Store(ctx context.Context, key string, value []byte) error
	// Load returns an error matching fs.ErrNotExist when key is absent.
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, path string, recursive bool) ([]string, error)
}

// ForgetLog is what this gateway process has applied of the shared forget
// log. It lives as long as the token cache (across config reloads).
type ForgetLog struct {
	mu      sync.Mutex
	applied map[string]bool
	// Since is when the cache began: older entries hold nothing it has.
	Since time.Time
}

// Append seals e under the names key and adds it to the log.
func (l *ForgetLog) Append(ctx context.Context, storage Storage, names NamesKeySource, e ForgetEntry) error {
	key, err := names.NamesKey(ctx)
	if err != nil {
		return err
	}
	aead, err := OwnerAEAD(key)
	if err != nil {
		return err
	}
	plain, _ := json.Marshal(e)
	nonce := make([]byte, aead.NonceSize())
	suffix := make([]byte, 4)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	name := fmt.Sprintf("%s/%020d-%s", ForgetLogPrefix, time.Now().UnixNano(), hex.EncodeToString(suffix))
	sealed := base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, forgetLogAAD))
	if err := storage.Store(ctx, name, []byte(sealed)); err != nil {
		return fmt.Errorf("writing the forget log: %w", err)
	}
	l.mu.Lock()
	if l.applied == nil {
		l.applied = map[string]bool{}
	}
	l.applied[name] = true // applied here already
	l.mu.Unlock()
	return nil
}

// Apply calls apply for each entry other gateways logged since this one
// last looked, and deletes entries past retention. An entry that does not
// open is skipped (and its error returned).
func (l *ForgetLog) Apply(ctx context.Context, storage Storage, names NamesKeySource, apply func(ForgetEntry)) error {
	list, err := storage.List(ctx, ForgetLogPrefix, false)
	if errors.Is(err, fs.ErrNotExist) || len(list) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing the forget log: %w", err)
	}
	sort.Strings(list)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied == nil {
		l.applied = map[string]bool{}
	}
	var openErr error
	now := time.Now()
	for _, name := range list {
		at, ok := forgetLogTime(name)
		if !ok {
			continue
		}
		if now.Sub(at) > ForgetLogRetention {
			_ = storage.Delete(ctx, name)
			delete(l.applied, name)
			continue
		}
		if l.applied[name] {
			continue
		}
		l.applied[name] = true
		if at.Before(l.Since.Add(-time.Minute)) { // a minute for clock skew between gateways
			continue
		}
		e, err := openForgetEntry(ctx, storage, names, name)
		if err != nil {
			openErr = err
			continue
		}
		apply(e)
	}
	return openErr
}

func openForgetEntry(ctx context.Context, storage Storage, names NamesKeySource, name string) (ForgetEntry, error) {
	var e ForgetEntry
	data, err := storage.Load(ctx, name)
	if err != nil {
		return e, err
	}
	key, err := names.NamesKey(ctx)
	if err != nil {
		return e, err
	}
	aead, err := OwnerAEAD(key)
	if err != nil {
		return e, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(string(data))
	if err != nil || len(raw) < aead.NonceSize() {
		return e, errors.New("a malformed forget log entry")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], forgetLogAAD)
	if err != nil || json.Unmarshal(plain, &e) != nil {
		return e, errors.New("a forget log entry that does not open")
	}
	return e, nil
}

// forgetLogTime reads the time in an entry's name.
func forgetLogTime(name string) (time.Time, bool) {
	stamp, _, ok := strings.Cut(path.Base(name), "-")
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
