package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// FRR's daemons, from Debian's frr package.
const frrDir = "/usr/lib/frr"

// The FRR configuration of the racks' router, the same policy as BIRD's:
// eBGP with every node from the router's address on its rack, BFD,
// graceful restart, pod CIDRs and LoadBalancer addresses only, ECMP.
var frrBGPTemplate = template.Must(template.New("bgpd").Parse(`hostname weft-router
log stdout informational
ip prefix-list weft-node-routes seq 10 permit {{.ClusterCIDR}} ge 16 le 32
ip prefix-list weft-node-routes seq 20 permit {{.LBPool}} ge 24 le 32
route-map weft-from-nodes permit 10
 match ip address prefix-list weft-node-routes
exit
route-map weft-to-nodes permit 10
exit
router bgp {{.RouterASN}}
 bgp router-id {{.RouterID}}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp graceful-restart
 bgp bestpath as-path multipath-relax
 neighbor nodes peer-group
 neighbor nodes remote-as {{.NodeASN}}
 neighbor nodes timers 3 {{.HoldTime}}
 neighbor nodes timers connect 2
{{- if .BFD}}
 neighbor nodes bfd profile weft
{{- end}}
{{- range .Nodes}}
 neighbor {{.IP}} peer-group nodes
 neighbor {{.IP}} update-source {{.Gateway}}
{{- end}}
 address-family ipv4 unicast
  neighbor nodes activate
  neighbor nodes route-map weft-from-nodes in
  neighbor nodes route-map weft-to-nodes out
  maximum-paths 16
 exit-address-family
exit
`))

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
	var b strings.Builder
	if err := frrBGPTemplate.Execute(&b, cfg); err != nil {
		return err
	}
	files := map[string]string{"zebra.conf": "hostname weft-router\n", "bfdd.conf": frrBFDConf, "bgpd.conf": b.String()}
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
