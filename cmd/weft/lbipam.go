package main

import (
	"fmt"
	"net"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/informers"

	"weft.dev/weft/internal/lbipam"
)

func lbipamCmd() *cobra.Command {
	var kubeconfig, pool string
	cmd := &cobra.Command{
		Use:   "lb-ipam",
		Short: "Give LoadBalancer Services addresses from a pool",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, p, err := net.ParseCIDR(pool)
			if err != nil || p.IP.To4() == nil {
				return fmt.Errorf("--pool must be an IPv4 CIDR: %q", pool)
			}
			client, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			factory := informers.NewSharedInformerFactory(client, 0)
			a := lbipam.New(p, client, factory, logger())
			factory.Start(ctx.Done())
			factory.WaitForCacheSync(ctx.Done())
			a.Run(ctx)
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	cmd.Flags().StringVar(&pool, "pool", "", "address pool, e.g. 198.19.100.0/24")
	return cmd
}
