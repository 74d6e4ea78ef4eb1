package testserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// LoadResult counts the requests of a steady load and those that failed:
// a transport error or a status other than 200.
type LoadResult struct {
	Requests int      `json:"requests"`
	Failed   int      `json:"failed"`
	Errors   []string `json:"errors,omitempty"` // the first few failures
}

// Load sends GET url (with host as the Host header when set) from workers
// keep-alive clients back to back for dur.
func Load(ctx context.Context, url, host string, workers int, dur time.Duration) LoadResult {
	var (
		mu  sync.Mutex
		res LoadResult
		wg  sync.WaitGroup
	)
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		if err != nil {
			res.Failed++
			if len(res.Errors) < 10 {
				res.Errors = append(res.Errors, err.Error())
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for ctx.Err() == nil {
				err := getOnce(client, url, host)
				if ctx.Err() != nil && err != nil {
					return // cut off by the end of the run, not a failure
				}
				record(err)
			}
		}()
	}
	wg.Wait()
	return res
}

func getOnce(client *http.Client, url, host string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", time.Now().Format("15:04:05.000"), resp.StatusCode)
	}
	return nil
}

// UntilOKResult is when url first answered 200, as Unix nanoseconds (the
// lab's pods share the host's clock), and after how many tries; First is
// when the first try began (a caller timing a change made after starting
// the prober checks that the prober was already asking).
type UntilOKResult struct {
	At    int64 `json:"at"`
	First int64 `json:"first"`
	Tries int   `json:"tries"`
}

// UntilOK asks url (Host: host) every interval on fresh connections until
// it answers 200, for at most dur: how a route's arrival is timed.
func UntilOK(url, host string, dur, every time.Duration) (UntilOKResult, error) {
	var res UntilOKResult
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(every) {
		res.Tries++
		start := time.Now()
		if res.First == 0 {
			res.First = start.UnixNano()
		}
		if getOnce(client, url, host) == nil {
			res.At = start.UnixNano()
			return res, nil
		}
	}
	return res, fmt.Errorf("%s (Host %s) not 200 after %d tries in %s", url, host, res.Tries, dur)
}
