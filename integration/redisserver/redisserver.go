// Package redisserver runs a real redis-server (Debian's package) for tests:
// in a temporary directory, with persistence off, on a loopback TCP port or a
// unix socket. A test can kill it, pause it (a Redis that answers nothing)
// and start it again on the same address, empty, as after a crash.
package redisserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process (restartable).
type Server struct {
	t    testing.TB
	dir  string
	port int    // 0 when listening on sock
	sock string // unix socket path, when port is 0

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	output *bytes.Buffer
}

// Start runs redis-server on 127.0.0.1:port, or on a unix socket in a
// temporary directory when port is 0. It fails the test, saying how to
// install it, when redis-server is missing. The server is killed when the
// test ends.
func Start(t testing.TB, port int) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make -f xcaddy.mk test-deps` (it installs Debian's redis-server)")
	}
	dir, err := os.MkdirTemp("", "redis-itest-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, dir: dir, port: port}
	if port == 0 {
		s.sock = filepath.Join(dir, "redis.sock")
	}
	t.Cleanup(func() {
		s.Kill()
		_ = os.RemoveAll(dir)
	})
	s.start()
	return s
}

// URL is the go-redis URL of the server.
func (s *Server) URL() string {
	if s.port == 0 {
		return "unix://" + s.sock
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port)
}

// Client returns a new client of the server, closed when the test ends, for
// looking at what is stored.
func (s *Server) Client() *redis.Client {
	opts, err := redis.ParseURL(s.URL())
	if err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(opts)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Server) start() {
	s.t.Helper()
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}
	if s.port == 0 {
		args = append(args, "--port", "0", "--unixsocket", s.sock, "--unixsocketperm", "700")
	} else {
		args = append(args, "--port", fmt.Sprint(s.port))
	}
	cmd := exec.Command("redis-server", args...)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done, s.output = cmd, done, out
	s.mu.Unlock()

	c := s.Client()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			s.t.Fatalf("redis-server exited at start: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not answer PING: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills the server (SIGKILL) and waits for it to exit; what it stored
// is lost.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Pause stops the process (SIGSTOP): connections are accepted by the kernel
// but nothing is answered, like a Redis stuck or far too slow.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signalling redis-server: %v", err)
	}
}

// Restart starts a killed server again on the same address, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
