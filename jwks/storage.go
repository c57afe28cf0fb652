package jwks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
)

// Storage persists key material. The Caddy adapter backs it with
// certmagic.Storage; several gateways sharing one Storage converge on one key
// set because every change happens under Lock.
type Storage interface {
	// Load returns an error matching errors.Is(err, fs.ErrNotExist) when key is missing.
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
	// Lock blocks until the named lock is held or ctx is done.
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
}

// NewMemoryStorage returns an in-process Storage, for tests. Its locks really
// exclude (per name) and honour ctx.
func NewMemoryStorage() Storage {
	return &memoryStorage{values: map[string][]byte{}, locks: map[string]chan struct{}{}}
}

type memoryStorage struct {
	mu     sync.Mutex
	values map[string][]byte
	locks  map[string]chan struct{} // a full 1-slot channel means "held"
}

func (s *memoryStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok {
		return nil, fmt.Errorf("memory storage: %s: %w", key, fs.ErrNotExist)
	}
	return append([]byte(nil), v...), nil
}

func (s *memoryStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key] = append([]byte(nil), value...)
	return nil
}

func (s *memoryStorage) lockChan(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		s.locks[name] = ch
	}
	return ch
}

func (s *memoryStorage) Lock(ctx context.Context, name string) error {
	select {
	case s.lockChan(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *memoryStorage) Unlock(_ context.Context, name string) error {
	select {
	case <-s.lockChan(name):
		return nil
	default:
		return errors.New("memory storage: unlock of unlocked " + name)
	}
}
