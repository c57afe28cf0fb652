package idempotency

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func newFSStore(t *testing.T, st *fsStorage, clock func() time.Time) *Store {
	t.Helper()
	s, err := New(Config{Storage: st, Prefix: "zapier/idempotency", PollInterval: time.Millisecond, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two gateways with their own Store over one directory, as two processes
// sharing Caddy's file storage: concurrent duplicates spread over both run
// once, and a third gateway started later replays.
func TestFileStorageAcrossGateways(t *testing.T) {
	const n = 20
	dir := t.TempDir()
	onLock, locked := signal(4 * n)
	gateways := []*Store{
		newFSStore(t, &fsStorage{root: dir, poll: time.Millisecond, onLock: onLock}, nil),
		newFSStore(t, &fsStorage{root: dir, poll: time.Millisecond, onLock: onLock}, nil),
	}
	ctx := context.Background()

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		kinds   = map[Kind]int{}
		replays []Response
	)
	for i := range n {
		s := gateways[i%2]
		wg.Go(func() {
			out, err := s.Begin(ctx, "tenant-1", "k1", []byte("body"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			kinds[out.Kind]++
			if out.Kind == Replay {
				replays = append(replays, out.Response)
			}
			mu.Unlock()
			if out.Kind == Proceed {
				// As in TestConcurrentDuplicatesRunOnce: finish once every
				// Begin has looked, so the others are waiting.
				if err := events(locked, n); err != nil {
					t.Error(err)
				}
				if err := out.Finish(ctx, created); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if kinds[Proceed] != 1 || kinds[Replay] != n-1 {
		t.Fatalf("outcomes %v, want 1 Proceed and %d Replay", kinds, n-1)
	}
	for _, r := range replays {
		if !reflect.DeepEqual(r, created) {
			t.Fatalf("replayed %+v, want %+v", r, created)
		}
	}

	restarted := newFSStore(t, &fsStorage{root: dir, poll: time.Millisecond}, nil)
	wantKind(t, begin(t, restarted, "tenant-1", "k1", "body"), Replay)
	if _, err := restarted.Begin(ctx, "tenant-1", "k1", []byte("other")); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("err = %v, want ErrKeyReused", err)
	}
	locks, err := os.ReadDir(filepath.Join(dir, "locks"))
	if err != nil || len(locks) != 0 {
		t.Fatalf("lock files left: %v, %v", locks, err)
	}
}

func TestFileStorageSweep(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	s := newFSStore(t, &fsStorage{root: dir, poll: time.Millisecond}, clock.Now)
	ctx := context.Background()
	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("no directory yet: Sweep = %d, %v", n, err)
	}
	out := begin(t, s, "t", "k1", "body")
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultTTL)
	if n, err := s.Sweep(ctx); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "zapier", "idempotency", recordID("t", "k1"))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("record file still there: %v", err)
	}
}

const (
	helperDirEnv = "IDEMPOTENCY_TEST_HELPER_DIR"
	helperReady  = "helper-looked" // marker file: the helper has read the record
	helperPrefix = "HELPER RESULT: "
)

// TestHelperProcess is the second process of TestTwoProcesses; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("run by TestTwoProcesses")
	}
	var once sync.Once
	st := &fsStorage{root: dir, poll: time.Millisecond, onLoad: func(string) {
		once.Do(func() {
			if err := os.WriteFile(filepath.Join(dir, helperReady), nil, 0o600); err != nil {
				t.Error(err)
			}
		})
	}}
	s := newFSStore(t, st, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Begin(ctx, "tenant-1", "k1", []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(struct {
		Kind     string
		Response Response
	}{out.Kind.String(), out.Response})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString(helperPrefix + string(line) + "\n")
}

// A real second process, sharing only the directory, waits for this one's
// in-flight request and replays its response.
func TestTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	s := newFSStore(t, &fsStorage{root: dir, poll: time.Millisecond}, nil)
	ctx := context.Background()
	out := begin(t, s, "tenant-1", "k1", "body")
	wantKind(t, out, Proceed)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Finish only once the helper has seen the pending record, so that it
	// is waiting rather than finding the response already stored.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for ready := false; !ready; {
		select {
		case err := <-exited:
			t.Fatalf("helper exited early: %v\n%s%s", err, stdout.String(), stderr.String())
		case <-deadline:
			t.Fatal("helper never read the record")
		case <-tick.C:
			_, err := os.Stat(filepath.Join(dir, helperReady))
			ready = err == nil
		}
	}
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}

	if err := <-exited; err != nil {
		t.Fatalf("helper: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var got struct {
		Kind     string
		Response Response
	}
	found := false
	for sc := bufio.NewScanner(&stdout); sc.Scan(); {
		if rest, ok := strings.CutPrefix(sc.Text(), helperPrefix); ok {
			found = true
			if err := json.Unmarshal([]byte(rest), &got); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !found {
		t.Fatalf("no result from the helper:\n%s", stdout.String())
	}
	if got.Kind != "Replay" || !reflect.DeepEqual(got.Response, created) {
		t.Fatalf("helper got %s %+v, want Replay %+v", got.Kind, got.Response, created)
	}
}
