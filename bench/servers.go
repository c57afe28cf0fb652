package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// staticToken is what A and C inject: a token of the same length as the fake
// Zapier's, so upstream requests are the same size on every side.
const staticToken = "zap_at_static-0123456789abcdef0123456789abcdef"

// Bench credentials for the fake Zapier; nothing real.
const (
	benchClientID     = "bench-client"
	benchClientSecret = "bench-secret"
	benchIssuer       = "https://accounts.example.com"
)

// upstream is the proxied-to server: the smallest possible answer, and a
// check that every request arrived with a bearer token. Each variant gets
// its own port (endpoint) with its own count of requests served: the
// "counted number of requests" the server's CPU time is divided by.
type upstream struct {
	servers []*http.Server
}

type endpoint struct {
	addr   string
	served atomic.Int64
}

// listen adds a port to the upstream.
func (u *upstream) listen(addr string) (*endpoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the upstream: %w", err)
	}
	ep := &endpoint{addr: addr}
	body := []byte(`{"ok":true}`)
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ep.served.Add(1)
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
				http.Error(w, "no bearer token", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "11")
			_, _ = w.Write(body)
		}),
	}
	u.servers = append(u.servers, srv)
	go func() { _ = srv.Serve(ln) }()
	return ep, nil
}

func (u *upstream) close() {
	for _, s := range u.servers {
		_ = s.Close()
	}
}

// fakeZapier runs the integration tests' fake Zapier in this process, so its
// counters can be read directly.
type fakeZapier struct {
	*fakezapier.Server
	srv *http.Server
}

func startFakeZapier(addr, jwksURL string) (*fakeZapier, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the fake Zapier: %w", err)
	}
	fz := fakezapier.New(fakezapier.Config{
		ClientID:       benchClientID,
		ClientSecret:   benchClientSecret,
		Issuer:         benchIssuer,
		JWKSURL:        jwksURL,
		AccessTokenTTL: 24 * time.Hour, // no refresh during a run
		MaxRecorded:    1,
	})
	srv := &http.Server{Handler: fz, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &fakeZapier{Server: fz, srv: srv}, nil
}

func (f *fakeZapier) close() { _ = f.srv.Close() }

// caddyfileA is bare Caddy: the same routes as B, with reverse_proxy adding
// a static Authorization header.
// admin is "off", or Caddy's admin address (for /debug/pprof).
func caddyfileA(listen, upstreamAddr, admin string) string {
	return fmt.Sprintf(`{
	admin %s
	persist_config off
}

http://%s {
	handle /.well-known/jwks.json {
		respond 404
	}
	handle_path /zapier/api/* {
		reverse_proxy %s {
			header_up Host {upstream_hostport}
			header_up Authorization "Bearer %s"
		}
	}
}
`, admin, listen, upstreamAddr, staticToken)
}

// caddyfileB is the gateway: zapier_auth in front of the same reverse_proxy.
func caddyfileB(listen, upstreamAddr, fakeAddr, admin string, maxInflight int) string {
	return fmt.Sprintf(`{
	admin %s
	persist_config off
	zapier {
		client_id %s
		client_secret %s
		issuer %s
		token_url http://%s/oauth/token
		api_url http://%s
		connect_url http://%s
		exchange {
			max_inflight %d
		}
	}
}

http://%s {
	handle /.well-known/jwks.json {
		zapier_jwks
	}
	handle_path /zapier/api/* {
		zapier_auth
		reverse_proxy %s {
			header_up Host {upstream_hostport}
		}
	}
}
`, admin, benchClientID, benchClientSecret, benchIssuer, fakeAddr, fakeAddr, fakeAddr, maxInflight, listen, upstreamAddr)
}

// nginxConf is C: one worker (like Caddy pinned to one CPU), upstream
// keep-alive (as Caddy does by default), proxy_set_header for the token.
func nginxConf(dir, listen, upstreamAddr string) string {
	return fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events {
	worker_connections 4096;
}
http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream backend {
		server %[3]s;
		keepalive 64;
	}
	server {
		listen %[2]s;
		location /zapier/api/ {
			proxy_pass http://backend/;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Authorization "Bearer %[4]s";
		}
	}
}
`, dir, listen, upstreamAddr, staticToken)
}

// server is one process under test.
type server struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	// nginx's work is done by its worker; CPU is summed over the process
	// and its children.
	withChildren bool
}

// startServer runs argv pinned to cpus (taskset) when cpus is not empty.
func startServer(name, dir, cpus string, env []string, argv ...string) (*server, error) {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return &server{name: name, cmd: cmd, log: logf}, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the server gracefully, then for good.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.log.Close()
}

// cpuTicks is the server's user+system CPU time in clock ticks, from
// /proc/<pid>/stat (fields 14 and 15), summed over its children for nginx.
func (s *server) cpuTicks() (int64, error) {
	pids := []int{s.pid()}
	if s.withChildren {
		pids = append(pids, childPIDs(s.pid())...)
	}
	var total int64
	for _, p := range pids {
		t, err := procCPUTicks(p)
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func procCPUTicks(pid int) (int64, error) {
	_, fields, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return utime + stime, nil
}

// procStat returns /proc/<pid>/stat split after the command name, so
// fields[0] is the state (field 3 in proc(5)).
func procStat(pid int) (comm string, fields []string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", nil, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields = strings.Fields(s[end+1:])
	if len(fields) < 13 {
		return "", nil, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return s[open+1 : end], fields, nil
}

// childPIDs lists the direct children of pid.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, fields, err := procStat(p)
		if err == nil && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// waitReady polls url until the server answers. taskset execs the server, so
// the pid being watched is the server's own.
func waitReady(ctx context.Context, url string, s *server) error {
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if s.cmd.ProcessState != nil {
			return fmt.Errorf("%s exited; see %s", s.name, s.log.Name())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer on %s (see %s): %w", s.name, url, s.log.Name(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
