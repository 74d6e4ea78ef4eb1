package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// FRR's daemons, from Debian's frr package.
const frrDir = "/usr/lib/frr"

// frrBGPConfig is the FRR configuration of the racks' router, the same
// policy as BIRD's: eBGP with every node from the router's address on its
// rack, BFD, graceful restart, pod CIDRs and LoadBalancer addresses only,
// ECMP (fmt, not text/template: see birdConfig).
func frrBGPConfig(c routerConfig) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("hostname weft-router\nlog stdout informational")
	p("ip prefix-list weft-node-routes seq 10 permit %s ge 16 le 32", c.ClusterCIDR)
	p("ip prefix-list weft-node-routes seq 20 permit %s ge 24 le 32", c.LBPool)
	p("route-map weft-from-nodes permit 10\n match ip address prefix-list weft-node-routes\nexit")
	p("route-map weft-to-nodes permit 10\nexit")
	p("router bgp %d\n bgp router-id %s", c.RouterASN, c.RouterID)
	p(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n bgp bestpath as-path multipath-relax")
	p(" neighbor nodes peer-group\n neighbor nodes remote-as %d\n neighbor nodes timers 3 %d\n neighbor nodes timers connect 2", c.NodeASN, c.HoldTime)
	if c.BFD {
		p(" neighbor nodes bfd profile weft")
	}
	for _, n := range c.Nodes {
		p(" neighbor %s peer-group nodes\n neighbor %s update-source %s", n.IP, n.IP, n.Gateway)
	}
	p(" address-family ipv4 unicast\n  neighbor nodes activate\n  neighbor nodes route-map weft-from-nodes in\n  neighbor nodes route-map weft-to-nodes out\n  maximum-paths 16\n exit-address-family\nexit")
	return b.String()
}

const frrBFDConf = `bfd
 profile weft
  detect-multiplier 3
  receive-interval 100
  transmit-interval 100
 exit
exit
`

// startFRR runs zebra (the kernel's routes), bfdd and bgpd in the router
// namespace, each with its files under the lab's router directory.
func (l *Lab) startFRR(dir string, cfg routerConfig) error {
	if _, err := os.Stat(filepath.Join(frrDir, "bgpd")); err != nil {
		return fmt.Errorf("frr not installed (hack/install-deps.sh installs it): %w", err)
	}
	files := map[string]string{"zebra.conf": "hostname weft-router\n", "bfdd.conf": frrBFDConf, "bgpd.conf": frrBGPConfig(cfg)}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	// The daemons run as Debian's frr user (they refuse root without it
	// being in the frrvty group) and write their sockets here.
	if err := exec.Command("chown", "-R", "frr:frr", dir).Run(); err != nil {
		return fmt.Errorf("chown %s to frr: %w", dir, err)
	}
	zsock := filepath.Join(dir, "zserv.api")
	for _, d := range []string{"zebra", "bfdd", "bgpd"} {
		argv := []string{filepath.Join(frrDir, d), "-f", filepath.Join(dir, d+".conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", zsock, "--vty_socket", dir, "-u", "frr", "-g", "frr", "--log", "stdout"}
		if err := l.startProc("router-frr-"+d, RouterNS, argv, nil); err != nil {
			return err
		}
		if d == "zebra" {
			if err := waitFile(zsock, 10*time.Second); err != nil {
				return fmt.Errorf("zebra: %w", err)
			}
		}
	}
	return nil
}

func waitFile(path string, limit time.Duration) error {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s did not appear in %s", path, limit)
}

// vtysh runs FRR commands against the lab router's daemons.
func (l *Lab) vtysh(cmds ...string) (string, error) {
	args := []string{"--vty_socket", filepath.Join(l.dir, "router")}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %v: %v: %s", cmds, err, out)
	}
	return string(out), nil
}

func (l *Lab) frrBFD(cfg routerConfig, on bool) error {
	cmd := "neighbor nodes bfd profile weft"
	if !on {
		cmd = "no neighbor nodes bfd"
	}
	_, err := l.vtysh("configure terminal", fmt.Sprintf("router bgp %d", cfg.RouterASN), cmd)
	return err
}

// frrEstablished lists the nodes' addresses whose sessions are up.
func (l *Lab) frrEstablished() (map[string]bool, error) {
	out, err := l.vtysh("show bgp ipv4 unicast summary json")
	if err != nil {
		return nil, err
	}
	var sum struct {
		Peers map[string]struct {
			State string `json:"state"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return nil, fmt.Errorf("vtysh summary: %w: %s", err, out)
	}
	up := map[string]bool{}
	for addr, p := range sum.Peers {
		up[addr] = p.State == "Established"
	}
	return up, nil
}
