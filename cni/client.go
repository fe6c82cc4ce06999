package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/containernetworking/cni/pkg/types"
)

// ErrAgentUnavailable means the agent's socket could not be reached at all (not running, socket
// missing, refused); the request certainly had no effect on the agent.
var ErrAgentUnavailable = errors.New("kuryr agent unavailable")

// maxResponseBytes bounds what the plugin reads back from the agent.
const maxResponseBytes = 1 << 20

// Client calls the node agent over its unix socket.
type Client struct {
	socketPath string
	http       *http.Client
}

// NewClient returns a client of the agent listening on socketPath.
func NewClient(socketPath string) *Client {
	dialer := &net.Dialer{}
	return &Client{
		socketPath: socketPath,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", socketPath)
			},
			DisableKeepAlives: true,
		}},
	}
}

// Call posts req to path and returns the body of a 200 answer. A non-200 answer is returned as
// *types.Error with the agent's code and message; an unreachable agent as ErrAgentUnavailable.
func (c *Client) Call(ctx context.Context, path string, req *Request) ([]byte, error) {
	var body io.Reader = http.NoBody
	method := http.MethodGet
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("encode request for %s: %w", path, err)
		}
		body, method = bytes.NewReader(b), http.MethodPost
	}
	hreq, err := http.NewRequestWithContext(ctx, method, "http://kuryr-agent"+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", path, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, fmt.Errorf("%w at %s: %v", ErrAgentUnavailable, c.socketPath, opErr.Err)
		}
		return nil, fmt.Errorf("call kuryr agent at %s%s: %w", c.socketPath, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("read kuryr agent answer to %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return data, nil
	}
	cniErr := &types.Error{}
	if jerr := json.Unmarshal(data, cniErr); jerr != nil || cniErr.Code == 0 {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("kuryr agent answered %s to %s", resp.Status, path), string(data))
	}
	return nil, cniErr
}
