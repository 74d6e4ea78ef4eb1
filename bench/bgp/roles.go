package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"weft.dev/weft/internal/routing/bgp"
)

// podCIDR i: 10.128.0.0/24, 10.128.1.0/24, ... (only inside the bench's
// namespaces).
func podCIDR(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256))
}

// runRouter is a GoBGP router announcing n pod CIDRs to the node; it runs
// until killed.
func runRouter(n int) {
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelError)
	s := server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(os.Stderr, nil)), lvl))
	go s.Serve()
	ctx := context.Background()
	check(s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: routerIP, ListenPort: 179}}))
	check(s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: nodeIP, PeerAsn: 64512},
		Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1}}}}))
	nh, _ := bgppkt.NewPathAttributeNextHop(netip.MustParseAddr(routerIP))
	paths := make([]*apiutil.Path, 0, n)
	for i := 0; i < n; i++ {
		nlri, err := bgppkt.NewIPAddrPrefix(podCIDR(i))
		check(err)
		paths = append(paths, &apiutil.Path{Family: bgppkt.RF_IPv4_UC, Nlri: nlri,
			Attrs: []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP), nh}})
	}
	_, err := s.AddPath(apiutil.AddPathRequest{Paths: paths})
	check(err)
	select {}
}

// runNode is the agent's side: its speaker and route table, exactly as
// the bgp backend wires them. It prints "installed N in SECONDS" once the
// kernel holds all n routes, timed from the session's Established.
func runNode(n int) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	table := bgp.NewRouteTable(log, nil)
	kernel, err := bgp.NewKernel()
	check(err)
	go table.Run(ctx, kernel)
	sp, err := bgp.StartSpeaker(ctx, bgp.SpeakerConfig{ASN: 64512, RouterID: netip.MustParseAddr(nodeIP), ListenPort: 179}, log, table.Update, func() {})
	check(err)
	router := netip.MustParseAddr(routerIP)
	if errs := sp.SetNeighbors(ctx, map[netip.Addr]bgp.Neighbor{router: {Address: router, ASN: 65000, Name: "router", Kind: bgp.KindExternal}}); len(errs) > 0 {
		check(fmt.Errorf("neighbor: %v", errs))
	}
	table.SetSessions(1, sp.Established)
	for sp.Established() < 1 {
		time.Sleep(time.Millisecond)
	}
	t0 := time.Now()
	for time.Since(t0) < time.Minute {
		routes, err := kernel.List()
		check(err)
		if len(routes) >= n {
			fmt.Printf("installed %d in %.4f\n", len(routes), time.Since(t0).Seconds())
			select {}
		}
		time.Sleep(2 * time.Millisecond)
	}
	check(fmt.Errorf("not all routes within a minute"))
}
