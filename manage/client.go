package manage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Client talks to the agent's management socket.
type Client struct {
	socketPath string
	http       *http.Client
}

// NewClient returns a client of the management socket at socketPath.
func NewClient(socketPath string) *Client {
	dialer := &net.Dialer{}
	return &Client{socketPath: socketPath, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}}}
}

// Response is an answer of the agent: its status code and body (text or JSON).
type Response struct {
	StatusCode int
	Body       []byte
}

// OK is true for a 2xx answer.
func (r *Response) OK() bool { return r.StatusCode >= 200 && r.StatusCode < 300 }

// Do sends body (JSON-encoded) to path with method; asJSON asks for a JSON answer.
func (c *Client) Do(ctx context.Context, method, path string, body any, asJSON bool) (*Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return c.DoRaw(ctx, method, path, data, asJSON)
}

// DoRaw sends body as it is (also when it is not valid JSON).
func (c *Client) DoRaw(ctx context.Context, method, path string, body []byte, asJSON bool) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if asJSON {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("management socket %s: %w", c.socketPath, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", c.socketPath, err)
	}
	return &Response{StatusCode: resp.StatusCode, Body: out}, nil
}
