// Package memstorage is an in-memory certmagic.Storage for tests of the
// plain-Go packages: values in a map, and a Lock per name that really
// excludes (a 1-slot channel, so Lock honours its context). Listing and
// missing keys behave as certmagic's FileStorage does.
package memstorage

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage is the in-memory storage. Its hooks let a test know where the
// code under test is, instead of sleeping.
type Storage struct {
	mu    sync.Mutex
	data  map[string][]byte
	locks map[string]chan struct{}

	OnLock    func(name string) // after a lock is acquired
	OnLoad    func(key string)  // after every Load
	FailStore error             // if set, Store returns it
}

var _ certmagic.Storage = (*Storage)(nil)

// New returns an empty Storage.
func New() *Storage {
	return &Storage{data: map[string][]byte{}, locks: map[string]chan struct{}{}}
}

func (m *Storage) lockChan(name string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		m.locks[name] = ch
	}
	return ch
}

// Lock waits for name to be free, or for ctx.
func (m *Storage) Lock(ctx context.Context, name string) error {
	select {
	case m.lockChan(name) <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.OnLock != nil {
		m.OnLock(name)
	}
	return nil
}

// Unlock frees name; freeing a name that is not locked is an error.
func (m *Storage) Unlock(_ context.Context, name string) error {
	select {
	case <-m.lockChan(name):
		return nil
	default:
		return fmt.Errorf("unlock %s: not locked", name)
	}
}

// Held is the number of locks currently held.
func (m *Storage) Held() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ch := range m.locks {
		n += len(ch)
	}
	return n
}

// Store keeps a copy of value.
func (m *Storage) Store(_ context.Context, key string, value []byte) error {
	if m.FailStore != nil {
		return m.FailStore
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[key] = append([]byte{}, value...)
	return nil
}

// Load returns a copy of key's value, or an error matching fs.ErrNotExist.
func (m *Storage) Load(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	v, ok := m.data[key]
	m.mu.Unlock()
	if m.OnLoad != nil {
		m.OnLoad(key)
	}
	if !ok {
		return nil, &fs.PathError{Op: "load", Path: key, Err: fs.ErrNotExist}
	}
	return append([]byte{}, v...), nil
}

// Delete removes key and everything under it, as a directory would go.
func (m *Storage) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.data {
		if k == key || strings.HasPrefix(k, key+"/") {
			delete(m.data, k)
		}
	}
	return nil
}

// Exists reports whether key holds a value.
func (m *Storage) Exists(_ context.Context, key string) bool {
	_, ok := m.Get(key)
	return ok
}

// Stat describes key's value.
func (m *Storage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	v, ok := m.Get(key)
	if !ok {
		return certmagic.KeyInfo{}, &fs.PathError{Op: "stat", Path: key, Err: fs.ErrNotExist}
	}
	return certmagic.KeyInfo{Key: key, Modified: time.Time{}, Size: int64(len(v)), IsTerminal: true}, nil
}

// List mimics certmagic's FileStorage: a missing directory is an error
// matching fs.ErrNotExist, and non-recursive listing names subdirectories.
func (m *Storage) List(_ context.Context, dir string, recursive bool) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for k := range m.data {
		rest, ok := strings.CutPrefix(k, dir+"/")
		if !ok {
			continue
		}
		if first, _, nested := strings.Cut(rest, "/"); nested && !recursive {
			rest = first
		}
		seen[path.Join(dir, rest)] = true
	}
	if len(seen) == 0 {
		return nil, &fs.PathError{Op: "list", Path: dir, Err: fs.ErrNotExist}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// Get is key's value as stored, for tests to look at.
func (m *Storage) Get(key string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.data[key]
	return v, ok
}

// Keys are every stored key, sorted.
func (m *Storage) Keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks := make([]string, 0, len(m.data))
	for k := range m.data {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
