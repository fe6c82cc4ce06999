package cni

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// ErrAgentUnavailable means the agent's socket could not be reached at all (not running, socket
// missing, refused); the request certainly had no effect on the agent.
var ErrAgentUnavailable = errors.New("kuryr agent unavailable")

// maxResponseBytes bounds what the plugin reads back from the agent.
const maxResponseBytes = 1 << 20

// Client calls the node agent over its unix socket.
//
// It speaks HTTP/1.0 itself, one request per connection, instead of using net/http: the runtime
// starts kuryr-cni once per ADD and DEL, and net/http's package initialisation (TLS, x509, gzip)
// was a third of the plugin's start-up. An HTTP/1.0 request makes the agent's net/http server
// answer with the body delimited by the end of the connection or Content-Length, never chunked.
type Client struct {
	socketPath string
}

// NewClient returns a client of the agent listening on socketPath.
func NewClient(socketPath string) *Client {
	return &Client{socketPath: socketPath}
}

// Call posts req to path (GET without a request) and returns the body of a 200 answer. A non-200
// answer is returned as *types.Error with the agent's code and message; an unreachable agent as
// ErrAgentUnavailable.
func (c *Client) Call(ctx context.Context, path string, req *Request) ([]byte, error) {
	var body []byte
	method := "GET"
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return nil, fmt.Errorf("encode request for %s: %w", path, err)
		}
		method = "POST"
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socketPath)
	if err != nil {
		cause := err
		if opErr := (*net.OpError)(nil); errors.As(err, &opErr) {
			cause = opErr.Err
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrAgentUnavailable, c.socketPath, cause)
	}
	defer conn.Close()
	// The context bounds the whole exchange: once it is done (deadline or cancellation), a read or
	// write in progress fails at once, and the error is the context's.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	status, data, err := exchange(conn, method, path, body)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("call kuryr agent at %s%s: %w", c.socketPath, path, err)
	}
	if status == 200 {
		return data, nil
	}
	cniErr := &types.Error{}
	if jerr := json.Unmarshal(data, cniErr); jerr != nil || cniErr.Code == 0 {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("kuryr agent answered %d to %s", status, path), string(data))
	}
	return nil, cniErr
}

// exchange writes one HTTP/1.0 request on conn and reads the answer: status code and body.
func exchange(conn net.Conn, method, path string, body []byte) (int, []byte, error) {
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.0\r\nHost: kuryr-agent\r\n", method, path)
	if body != nil {
		fmt.Fprintf(&head, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	head.WriteString("\r\n")
	if _, err := conn.Write(append(head.Bytes(), body...)); err != nil {
		return 0, nil, fmt.Errorf("send request: %w", err)
	}
	tp := textproto.NewReader(bufio.NewReader(conn))
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("read answer: malformed status line %q", line)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, fmt.Errorf("read answer headers: %w", err)
	}
	if te := hdr.Get("Transfer-Encoding"); te != "" {
		return 0, nil, fmt.Errorf("read answer: unexpected Transfer-Encoding %q to an HTTP/1.0 request", te)
	}
	cl := hdr.Get("Content-Length")
	if cl == "" {
		// The body runs to the end of the connection.
		data, err := io.ReadAll(io.LimitReader(tp.R, maxResponseBytes+1))
		switch {
		case err != nil:
			return 0, nil, fmt.Errorf("read answer body: %w", err)
		case len(data) > maxResponseBytes:
			return 0, nil, fmt.Errorf("read answer: more than the %d bytes accepted", maxResponseBytes)
		}
		return status, data, nil
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	switch {
	case err != nil || n < 0:
		return 0, nil, fmt.Errorf("read answer: bad Content-Length %q", cl)
	case n > maxResponseBytes:
		return 0, nil, fmt.Errorf("read answer: %d bytes, more than the %d accepted", n, maxResponseBytes)
	}
	data := make([]byte, n) // bytes after the declared length are not the answer's
	if got, err := io.ReadFull(tp.R, data); err != nil {
		return 0, nil, fmt.Errorf("read answer body: %d of %d bytes: %w", got, n, err)
	}
	return status, data, nil
}
