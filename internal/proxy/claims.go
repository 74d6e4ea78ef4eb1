package proxy

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// addressClaims decides which Service an external address (externalIP or
// load-balancer IP, with protocol and port) belongs to when several ask for
// it: the oldest Service, then the first by namespace/name. The decision is
// the same on every node and at every sync, and when the winner goes the
// next claimant takes over.
type addressClaims struct {
	byKey map[string]map[string]time.Time // address key → service → its creation time
}

func newAddressClaims() addressClaims {
	return addressClaims{byKey: map[string]map[string]time.Time{}}
}

func claimKey(ip net.IP, sp ServicePort) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(sp.Port))) + "/" + string(sp.Protocol)
}

// claimKeysOf lists the external addresses ports ask for.
func claimKeysOf(ports []ServicePort) map[string]time.Time {
	out := map[string]time.Time{}
	for _, sp := range ports {
		for _, ip := range sp.ExternalIPs {
			out[claimKey(ip, sp)] = sp.Created
		}
	}
	return out
}

// replace records svc's claims going from old to new ports and returns the
// address keys whose claimants changed.
func (c addressClaims) replace(svc string, old, new []ServicePort) []string {
	oldKeys, newKeys := claimKeysOf(old), claimKeysOf(new)
	var changed []string
	for k := range oldKeys {
		if _, ok := newKeys[k]; !ok {
			delete(c.byKey[k], svc)
			if len(c.byKey[k]) == 0 {
				delete(c.byKey, k)
			}
			changed = append(changed, k)
		}
	}
	for k, created := range newKeys {
		if cur, ok := c.byKey[k][svc]; ok && cur.Equal(created) {
			continue
		}
		if c.byKey[k] == nil {
			c.byKey[k] = map[string]time.Time{}
		}
		c.byKey[k][svc] = created
		changed = append(changed, k)
	}
	return changed
}

// others lists the services other than svc claiming any of keys.
func (c addressClaims) others(svc string, keys []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		for other := range c.byKey[k] {
			if other != svc && !seen[other] {
				seen[other] = true
				out = append(out, other)
			}
		}
	}
	return out
}

func (c addressClaims) winner(k string) string {
	best, bestTime := "", time.Time{}
	for svc, created := range c.byKey[k] {
		if best == "" || created.Before(bestTime) || (created.Equal(bestTime) && svc < best) {
			best, bestTime = svc, created
		}
	}
	return best
}

// filter removes from svc's ports the external addresses another Service
// holds, and says which in a message ("" when none).
func (c addressClaims) filter(svc string, ports []ServicePort) ([]ServicePort, string) {
	lost := map[string]string{}
	out := make([]ServicePort, len(ports))
	for i, sp := range ports {
		keep := func(ips []net.IP) []net.IP {
			var kept []net.IP
			for _, ip := range ips {
				k := claimKey(ip, sp)
				if w := c.winner(k); w != "" && w != svc {
					lost[k] = w
					continue
				}
				kept = append(kept, ip)
			}
			return kept
		}
		sp.ExternalIPs, sp.LoadBalancerIPs = keep(sp.ExternalIPs), keep(sp.LoadBalancerIPs)
		out[i] = sp
	}
	if len(lost) == 0 {
		return ports, "" // the same ports: share them rather than keep a copy
	}
	var msgs []string
	for k, w := range lost {
		msgs = append(msgs, fmt.Sprintf("%s is held by %s (older)", k, w))
	}
	sort.Strings(msgs)
	return out, strings.Join(msgs, "; ")
}
