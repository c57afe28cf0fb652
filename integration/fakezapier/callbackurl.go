package fakezapier

// callback_url validation (zapier-api-2026.md §2.2): https only, at most 2048
// characters, and a host that resolves only to public addresses. Zapier
// lists 10/8, 172.16/12, 192.168/16, 127/8 and ::1; the fake rejects every
// address that is not globally reachable (IANA special-purpose registries),
// unless the host is in Config.CallbackAllowHosts.

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

const (
	maxCallbackURL     = 2048
	callbackLookupTime = 5 * time.Second
)

// nonPublic are the prefixes that are not globally reachable unicast.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network", unspecified
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // CGNAT shared address space
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation (TEST-NET-1)
		"192.88.99.0/24",  // deprecated 6to4 relay anycast
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation (TEST-NET-2)
		"203.0.113.0/24",  // documentation (TEST-NET-3)
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
		"::/128",          // unspecified
		"::1/128",         // loopback
		"64:ff9b:1::/48",  // local-use NAT64
		"100::/64",        // discard-only
		"2001::/23",       // IETF protocol assignments (Teredo, ORCHID, …)
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4, which can embed any IPv4 address
		"3fff::/20",       // documentation
		"5f00::/16",       // SRv6 SIDs
		"fc00::/7",        // unique local (ULA)
		"fe80::/10",       // link-local
		"fec0::/10",       // deprecated site-local
		"ff00::/8",        // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var (
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	ipv6Unicast = netip.MustParsePrefix("2000::/3") // the only IPv6 global unicast allocation
)

// publicAddr reports whether a is a globally reachable unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	if nat64.Contains(a) { // well-known NAT64: judge the IPv4 address inside
		b := a.As16()
		return publicAddr(netip.AddrFrom4([4]byte(b[12:])))
	}
	if a.Is6() && !ipv6Unicast.Contains(a) {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return a.IsGlobalUnicast()
}

// lookupNetIP resolves host; tests replace Server.cb.lookup.
func lookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// checkCallbackURL validates a callback_url JSON value; it returns the URL,
// or a problem for the 400 answer.
func (s *Server) checkCallbackURL(ctx context.Context, raw json.RawMessage) (u string, problem string) {
	if strings.TrimSpace(string(raw)) == "null" {
		return "", "This field may not be null."
	}
	if json.Unmarshal(raw, &u) != nil {
		return "", "Must be a string."
	}
	switch {
	case u == "":
		return "", "This field may not be blank."
	case len(u) > maxCallbackURL: // bytes: equal to characters for the ASCII URLs clients send, stricter otherwise
		return "", "Ensure this field has no more than 2048 characters."
	}
	parsed, err := url.Parse(u)
	if err != nil || !parsed.IsAbs() || parsed.Host == "" || parsed.Opaque != "" {
		return "", "Enter a valid URL."
	}
	if parsed.Scheme != "https" { // url.Parse lower-cases the scheme
		return "", "Only https URLs are accepted."
	}
	host := parsed.Hostname()
	if host == "" {
		return "", "Enter a valid URL."
	}
	if s.callbackHostAllowed(host) {
		return u, ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !publicAddr(a) {
			return "", "The host " + host + " is not a public address."
		}
		return u, ""
	}
	ctx, cancel := context.WithTimeout(ctx, callbackLookupTime)
	defer cancel()
	addrs, err := s.cb.lookup(ctx, host)
	if err != nil || len(addrs) == 0 {
		return "", "The host " + host + " could not be resolved."
	}
	for _, a := range addrs {
		if !publicAddr(a) {
			return "", "The host " + host + " resolves to a non-public address (" + a.String() + ")."
		}
	}
	return u, ""
}

func (s *Server) callbackHostAllowed(host string) bool {
	ha, hostErr := netip.ParseAddr(host)
	for _, allowed := range s.cfg.CallbackAllowHosts {
		allowed = strings.TrimSuffix(strings.TrimPrefix(allowed, "["), "]")
		if strings.EqualFold(allowed, host) {
			return true
		}
		if aa, err := netip.ParseAddr(allowed); err == nil && hostErr == nil && aa == ha {
			return true
		}
	}
	return false
}
