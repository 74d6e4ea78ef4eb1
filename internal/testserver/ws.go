package testserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// serveWebSocket echoes every message back on the same connection until
// the client closes it: what a proxy must carry across an Upgrade.
func serveWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	for {
		kind, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, kind, msg); err != nil {
			return
		}
	}
}

// WSResult is what one held WebSocket saw: echoes sent and answered.
type WSResult struct {
	Sent     int `json:"sent"`
	Answered int `json:"answered"`
}

// HoldWebSocket opens one WebSocket to url (with host as the Host header
// when set) and sends a numbered message every interval for dur, checking
// each echo. Any failure, including the connection closing early, is an
// error: the connection must outlive whatever happens meanwhile.
func HoldWebSocket(ctx context.Context, url, host string, dur, every time.Duration) (WSResult, error) {
	var res WSResult
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPClient: client, Host: host}
	c, _, err := websocket.Dial(dialCtx, url, opts)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", url, err)
	}
	defer c.CloseNow()
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		want := fmt.Sprintf("ping %d", res.Sent)
		res.Sent++
		msgCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := c.Write(msgCtx, websocket.MessageText, []byte(want))
		var got []byte
		if err == nil {
			_, got, err = c.Read(msgCtx)
		}
		cancel()
		if err != nil {
			return res, fmt.Errorf("message %d: %w", res.Sent, err)
		}
		if string(got) != want {
			return res, fmt.Errorf("message %d: echo %q, want %q", res.Sent, got, want)
		}
		res.Answered++
		time.Sleep(every)
	}
	return res, c.Close(websocket.StatusNormalClosure, "done")
}
