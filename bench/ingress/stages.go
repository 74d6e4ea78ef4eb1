package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

// syncStages reads weft ingress's weft_gateway_sync_duration_seconds
// (sum and count per stage) from its health port, inside its pod's
// network namespace.
func syncStages() (map[string][2]float64, error) {
	pids := pidsWith("weft ingress --publish-service")
	if len(pids) != 1 {
		return nil, fmt.Errorf("weft ingress: %d processes", len(pids))
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pids[0]), "-n", "curl", "-sf", "http://127.0.0.1:10254/metrics").Output()
	if err != nil {
		return nil, fmt.Errorf("metrics: %v", err)
	}
	st := map[string][2]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, `{stage="`)
		if !ok || !strings.HasPrefix(name, "weft_gateway_sync_duration_seconds_") {
			continue
		}
		stage, val, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		s := st[stage]
		switch strings.TrimPrefix(name, "weft_gateway_sync_duration_seconds_") {
		case "sum":
			s[0] = v
		case "count":
			s[1] = v
		}
		st[stage] = s
	}
	return st, nil
}

// stageMeans is the mean time per stage, in ms, between two readings
// of syncStages ("" when either failed).
func stageMeans(before, after map[string][2]float64) string {
	var parts []string
	for stage, a := range after {
		b := before[stage]
		if n := a[1] - b[1]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f ms (%d)", stage, (a[0]-b[0])/n*1000, int(n)))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
