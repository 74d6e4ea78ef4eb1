package lab

import "fmt"

// startFRR runs FRR as the racks' router.
func (l *Lab) startFRR(dir string, cfg routerConfig) error {
	return fmt.Errorf("router frr: not supported by this lab yet; use --router bird")
}
