package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/zapgate/caddy-zapier/internal/memstorage"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStorage is the shared in-memory storage of the tests.
type memStorage = memstorage.Storage

func newMemStorage() *memStorage { return memstorage.New() }

// fsStorage is a file-system Storage like certmagic's FileStorage: values
// are files written atomically (temp file and rename), and Lock creates a
// lock file with O_EXCL, so several fsStorage values (or processes) on one
// directory exclude each other.
type fsStorage struct {
	root   string
	poll   time.Duration // how often a blocked Lock retries
	onLock func(name string)
	onLoad func(key string)
}

func (f *fsStorage) file(key string) string { return filepath.Join(f.root, filepath.FromSlash(key)) }

func (f *fsStorage) lockFile(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(f.root, "locks", hex.EncodeToString(sum[:])+".lock")
}

func (f *fsStorage) Lock(ctx context.Context, name string) error {
	lf := f.lockFile(name)
	if err := os.MkdirAll(filepath.Dir(lf), 0o700); err != nil {
		return err
	}
	for {
		fh, err := os.OpenFile(lf, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			if f.onLock != nil {
				f.onLock(name)
			}
			return fh.Close()
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		select {
		case <-time.After(f.poll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fsStorage) Unlock(_ context.Context, name string) error {
	return os.Remove(f.lockFile(name))
}

func (f *fsStorage) Store(_ context.Context, key string, value []byte) error {
	name := f.file(key)
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(value); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), name)
}

func (f *fsStorage) Load(_ context.Context, key string) ([]byte, error) {
	b, err := os.ReadFile(f.file(key))
	if f.onLoad != nil {
		f.onLoad(key)
	}
	return b, err
}

func (f *fsStorage) Delete(_ context.Context, key string) error {
	return os.RemoveAll(f.file(key))
}

func (f *fsStorage) List(_ context.Context, dir string, _ bool) ([]string, error) {
	entries, err := os.ReadDir(f.file(dir))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			keys = append(keys, path.Join(dir, e.Name()))
		}
	}
	return keys, nil
}

// fakeClock is the injected clock; tests move it with Advance.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signal returns a hook that reports each call on a buffered channel, for
// tests to wait on a Begin reaching a point without sleeping.
func signal(n int) (func(string), <-chan string) {
	ch := make(chan string, n)
	return func(s string) {
		select {
		case ch <- s:
		default: // nobody counts this many; do not block storage
		}
	}, ch
}

// receive waits for n events, failing the test after a generous bound.
func receive(t *testing.T, ch <-chan string, n int) {
	t.Helper()
	if err := events(ch, n); err != nil {
		t.Fatal(err)
	}
}

// events waits for n events, or gives up after a generous bound (for
// goroutines other than the test's, which may not call t.Fatal).
func events(ch <-chan string, n int) error {
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-ch:
		case <-timeout:
			return fmt.Errorf("got %d of %d storage events", i, n)
		}
	}
	return nil
}

var (
	_ Storage = (*memStorage)(nil)
	_ Storage = (*fsStorage)(nil)
)
