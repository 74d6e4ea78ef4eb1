package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"weft.dev/weft/internal/routing/bfd"
)

// Route is a best path GoBGP chose: learned from a peer (Nexthop set) or
// withdrawn / originated here (Nexthop invalid: no kernel route).
type Route struct {
	Prefix  netip.Prefix
	Nexthop netip.Addr
	Peer    netip.Addr
}

// Speaker runs GoBGP in process. Its methods are called from one
// goroutine (the controller's); GoBGP's callbacks arrive on others.
type Speaker struct {
	srv      *server.BgpServer
	log      *slog.Logger
	routerID netip.Addr
	grTime   uint32

	neighbors map[netip.Addr]Neighbor
	external  map[string]bool // the external peers' neighbor set
	announced map[netip.Prefix]Announcement

	bfd     *bfd.Manager
	stopBFD context.CancelFunc
	onState func()

	mu     sync.Mutex
	states map[netip.Addr]string
}

// SpeakerConfig is what a speaker is started with; a change of ASN or
// router ID needs a new speaker.
type SpeakerConfig struct {
	ASN      uint32
	RouterID netip.Addr // the node's IPv4 address (or any unique IPv4)
	// ListenPort is 179 on nodes; tests use others, -1 listens nowhere.
	ListenPort int32
	// GracefulRestartSeconds is the restart time announced to peers.
	GracefulRestartSeconds uint32
	// BFDPort is where BFD is received: bfd.Port unless a test says
	// otherwise.
	BFDPort uint16
}

// StartSpeaker starts GoBGP and watches its best paths and peer states:
// routes go to onRoutes, state changes to onState.
func StartSpeaker(ctx context.Context, cfg SpeakerConfig, log *slog.Logger, onRoutes func([]Route), onState func()) (*Speaker, error) {
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), lvl))
	go srv.Serve()
	gr := cfg.GracefulRestartSeconds
	if gr == 0 {
		gr = DefaultGracefulRestartTime
	}
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: cfg.ListenPort,
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: gr},
	}})
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("start BGP: %w", err)
	}
	sp := &Speaker{srv: srv, log: log, routerID: cfg.RouterID, grTime: gr,
		neighbors: map[netip.Addr]Neighbor{}, announced: map[netip.Prefix]Announcement{}, states: map[netip.Addr]string{},
		onState: onState}
	if err := sp.exportOnlyOwnToExternal(ctx); err != nil {
		srv.Stop()
		return nil, err
	}
	if err := sp.startBFD(ctx, cfg.BFDPort); err != nil {
		srv.Stop()
		return nil, err
	}
	err = srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnBestPath: func(paths []*apiutil.Path, _ time.Time) { onRoutes(routesOf(paths)) },
	}, server.WatchBestPath(true))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	err = srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			sp.mu.Lock()
			sp.states[ev.Peer.State.NeighborAddress.Unmap()] = stateName(ev.Peer.State.SessionState)
			sp.mu.Unlock()
			onState()
		},
	}, server.WatchPeer())
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return sp, nil
}

// externalSet names the GoBGP neighbor set of the external peers. It
// always holds two addresses no peer has, because GoBGP reads an empty
// neighbor set as "every neighbor".
const externalSet = "weft-external-peers"

var noPeer = []string{"0.0.0.0/32", "::/128"}

// exportOnlyOwnToExternal: a node announces to routers only what it
// originates (its pod CIDRs, its service addresses), never the other
// nodes' routes it learned, or a router would see every pod CIDR behind
// every node and spread traffic for one node over all of them.
func (sp *Speaker) exportOnlyOwnToExternal(ctx context.Context) error {
	if err := sp.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: externalSet, List: noPeer}}); err != nil {
		return err
	}
	var stmts []*api.Statement
	for i, typ := range []api.Conditions_RouteType{api.Conditions_ROUTE_TYPE_INTERNAL, api.Conditions_ROUTE_TYPE_EXTERNAL} {
		stmts = append(stmts, &api.Statement{Name: fmt.Sprintf("weft-learned-%d", i),
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: externalSet}, RouteType: typ},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}})
	}
	const policy = "weft-export-own-to-external"
	if err := sp.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: stmts}}); err != nil {
		return err
	}
	return sp.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT}})
}

// setExternal keeps the external peers' neighbor set equal to want's
// external peers. Entries are added and deleted in place: GoBGP's policy
// keeps the set it was built with, so a replaced set would not be seen.
func (sp *Speaker) setExternal(ctx context.Context, want map[netip.Addr]Neighbor) error {
	next := map[string]bool{}
	for a, n := range want {
		if n.Kind == KindExternal {
			next[netip.PrefixFrom(a, a.BitLen()).String()] = true
		}
	}
	var add, del []string
	for p := range next {
		if !sp.external[p] {
			add = append(add, p)
		}
	}
	for p := range sp.external {
		if !next[p] {
			del = append(del, p)
		}
	}
	set := func(list []string) *api.DefinedSet {
		sort.Strings(list)
		return &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: externalSet, List: list}
	}
	if len(add) > 0 {
		if err := sp.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set(add)}); err != nil {
			return err
		}
	}
	if len(del) > 0 {
		if err := sp.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set(del)}); err != nil {
			return err
		}
	}
	sp.external = next
	return nil
}

// Stop ends every session without a NOTIFICATION-less restart: used when
// the configuration needs a new speaker, not when the agent exits (an
// exiting agent leaves its sessions to die so that peers keep its routes
// for the graceful-restart time).
func (sp *Speaker) Stop() {
	sp.stopBFD()
	sp.CloseBFD()
	_ = sp.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	sp.srv.Stop()
}

// startBFD runs weft's own BFD beside GoBGP (GoBGP's is never enabled):
// a session going down resets its BGP session only while that session
// is Established. GoBGP would queue the reset of a session that is not,
// and the queued NOTIFICATION would end the next session at once.
func (sp *Speaker) startBFD(ctx context.Context, port uint16) error {
	if port == 0 {
		port = bfd.Port
	}
	ctx, sp.stopBFD = context.WithCancel(ctx)
	sp.bfd = bfd.NewManager(sp.log.With("component", "bfd"), netip.AddrPortFrom(netip.IPv6Unspecified(), port), netip.Addr{}, sp.bfdChanged)
	if err := sp.bfd.Start(ctx); err != nil {
		sp.stopBFD()
		return err
	}
	return nil
}

func (sp *Speaker) bfdChanged(peer netip.Addr, up bool) {
	defer sp.onState()
	sp.mu.Lock()
	state := sp.states[peer]
	sp.mu.Unlock()
	if up || state != "Established" {
		return
	}
	sp.log.Warn("BFD down: resetting the BGP session", "neighbor", peer)
	err := sp.srv.ResetPeer(context.Background(), &api.ResetPeerRequest{Address: peer.String(), Communication: "BFD down"})
	if err != nil {
		sp.log.Warn("reset BGP session after BFD down", "neighbor", peer, "err", err)
	}
}

// CloseBFD ends every BFD session, telling each peer AdminDown.
func (sp *Speaker) CloseBFD() { sp.bfd.Close() }

// BFDStates returns each BFD session's state ("Up", "Down", ...).
func (sp *Speaker) BFDStates() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for a, s := range sp.bfd.States() {
		out[a] = s.String()
	}
	return out
}

// States returns each neighbor's session state ("established", ...).
func (sp *Speaker) States() map[netip.Addr]string {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make(map[netip.Addr]string, len(sp.states))
	for a, s := range sp.states {
		out[a] = s
	}
	return out
}

func stateName(s bgppkt.FSMState) string {
	switch s {
	case bgppkt.BGP_FSM_IDLE:
		return "Idle"
	case bgppkt.BGP_FSM_CONNECT:
		return "Connect"
	case bgppkt.BGP_FSM_ACTIVE:
		return "Active"
	case bgppkt.BGP_FSM_OPENSENT:
		return "OpenSent"
	case bgppkt.BGP_FSM_OPENCONFIRM:
		return "OpenConfirm"
	case bgppkt.BGP_FSM_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}

// SetNeighbors adds, updates and removes sessions to match want. A
// session that fails to be configured is returned in the errors and the
// others go on.
func (sp *Speaker) SetNeighbors(ctx context.Context, want map[netip.Addr]Neighbor) map[netip.Addr]error {
	errs := map[netip.Addr]error{}
	want = maps.Clone(want)
	if err := sp.setExternal(ctx, want); err != nil {
		// Without the filter a router would get other nodes' routes.
		for a, n := range want {
			if n.Kind == KindExternal {
				errs[a] = fmt.Errorf("export filter: %w", err)
				delete(want, a)
			}
		}
	}
	for a := range sp.neighbors {
		if _, ok := want[a]; ok {
			continue
		}
		if err := sp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			sp.log.Warn("remove BGP neighbor", "neighbor", a, "err", err)
		}
		delete(sp.neighbors, a)
		sp.mu.Lock()
		delete(sp.states, a)
		sp.mu.Unlock()
	}
	for a, n := range want {
		prev, had := sp.neighbors[a]
		if had && sessionKey(prev) == sessionKey(n) {
			sp.neighbors[a] = n // BFD settings, if they changed
			continue
		}
		var err error
		if had {
			// Settings of a live session: replaced, as GoBGP resets the
			// session for most of them anyway.
			_ = sp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()})
			delete(sp.neighbors, a)
		}
		err = sp.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: sp.peer(n)})
		if err != nil {
			errs[a] = err
			continue
		}
		sp.neighbors[a] = n
	}
	sp.setBFD()
	return errs
}

// sessionKey is Key without BFD: BFD runs beside the BGP session and a
// change of it leaves the session as it is.
func sessionKey(n Neighbor) string {
	n.BFD = nil
	return n.Key()
}

func (sp *Speaker) setBFD() {
	var peers []bfd.Peer
	for a, n := range sp.neighbors {
		if n.BFD == nil {
			continue
		}
		iv, mult := n.BFD.IntervalMs, n.BFD.Multiplier
		peers = append(peers, bfd.Peer{Address: a, Interval: time.Duration(iv) * time.Millisecond, Multiplier: uint8(min(mult, 255))})
	}
	sp.bfd.Set(peers)
}

func (sp *Speaker) peer(n Neighbor) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if n.Address.Is6() {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	hold, keep := uint64(n.HoldTime), uint64(n.Keepalive)
	if hold == 0 {
		hold = DefaultHoldTime
	}
	if keep == 0 {
		keep = max(hold/3, 1)
	}
	p := &api.Peer{
		Conf:   &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password, Description: n.Kind + " " + n.Name},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: keep, ConnectRetry: 2, IdleHoldTimeAfterReset: 1}},
		// Both ways: peers keep our routes while we restart, and we keep
		// theirs while they do.
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: sp.grTime},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
	if n.RRClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: sp.routerID.String()}
	}
	return p
}

// SetAnnouncements originates want (next hop: this node's address of the
// prefix's family) and withdraws what is no longer wanted.
func (sp *Speaker) SetAnnouncements(want []Announcement, nexthop4, nexthop6 netip.Addr) error {
	keep := map[netip.Prefix]bool{}
	var firstErr error
	for _, a := range want {
		keep[a.Prefix] = true
		if prev, ok := sp.announced[a.Prefix]; ok && prev.Key() == a.Key() {
			continue
		}
		nh := nexthop4
		if a.Prefix.Addr().Is6() {
			nh = nexthop6
		}
		if !nh.IsValid() {
			continue // no address of that family on this node
		}
		p, err := pathOf(a, nh, false)
		if err == nil {
			_, err = sp.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
		}
		if err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("announce %s: %w", a.Prefix, err))
			continue
		}
		sp.announced[a.Prefix] = a
	}
	for pfx, a := range sp.announced {
		if keep[pfx] {
			continue
		}
		nh := nexthop4
		if pfx.Addr().Is6() {
			nh = nexthop6
		}
		p, err := pathOf(a, nh, true)
		if err == nil {
			err = sp.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}})
		}
		if err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("withdraw %s: %w", pfx, err))
			continue
		}
		delete(sp.announced, pfx)
	}
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func pathOf(a Announcement, nh netip.Addr, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(a.Prefix)
	if err != nil {
		return nil, err
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := bgppkt.RF_IPv4_UC
	if a.Prefix.Addr().Is4() {
		nhAttr, err := bgppkt.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nhAttr)
	} else {
		fam = bgppkt.RF_IPv6_UC
		mp, err := bgppkt.NewPathAttributeMpReachNLRI(fam, []bgppkt.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(a.Communities))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}

// routesOf turns GoBGP's best paths into kernel decisions.
func routesOf(paths []*apiutil.Path) []Route {
	out := make([]Route, 0, len(paths))
	for _, p := range paths {
		pfx, ok := prefixOf(p.Nlri)
		if !ok {
			continue
		}
		r := Route{Prefix: pfx}
		local := !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified()
		if !p.Withdrawal && !local {
			r.Nexthop, r.Peer = nexthopOf(p.Attrs), p.PeerAddress.Unmap()
		}
		out = append(out, r)
	}
	return out
}

func prefixOf(n bgppkt.NLRI) (netip.Prefix, bool) {
	switch v := n.(type) {
	case *bgppkt.IPAddrPrefix:
		return v.Prefix.Masked(), true
	}
	return netip.Prefix{}, false
}

func nexthopOf(attrs []bgppkt.PathAttributeInterface) netip.Addr {
	for _, a := range attrs {
		switch v := a.(type) {
		case *bgppkt.PathAttributeNextHop:
			return v.Value.Unmap()
		case *bgppkt.PathAttributeMpReachNLRI:
			return v.Nexthop.Unmap()
		}
	}
	return netip.Addr{}
}

// Established counts the sessions in state Established.
func (sp *Speaker) Established() int {
	n := 0
	for _, s := range sp.States() {
		if s == "Established" {
			n++
		}
	}
	return n
}
