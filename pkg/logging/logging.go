// Package logging builds the plugins' loggers from the "logFile" and
// "logLevel" configuration fields. Logs never go to stdout: that is where a
// CNI plugin prints its result.
//
// Lines are slog's text format (key=value). Every value that is not a
// plain word (empty, or holding a space, '=', '"', a control character, a
// non-printing or invalid UTF-8 sequence) is written as a Go quoted string,
// so a value from the configuration or the runtime (network name,
// container ID, interface name, error text) can never end the line or
// start a new key. slog writes DEL (0x7f) bare, as JSON allows; quoteDEL
// makes it quote those values too. TestHostileValuesStayInTheirField and
// FuzzLogLine hold the output to that.
package logging

import (
	"encoding"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Options select where and how much to log.
type Options struct {
	// File, if set, receives the log lines (appended; created 0600) if it
	// passes the rules of OpenFile. Otherwise they go to Stderr, which the
	// runtime records.
	File string
	// Level is debug, info, warn or error. The default is info with a File,
	// warn on stderr: a runtime's log should not fill with routine ADDs.
	Level string
	// Stderr is the fallback writer (os.Stderr in the plugins).
	Stderr io.Writer
}

// ParseLevel maps a level name to slog's; "" gives def.
func ParseLevel(s string, def slog.Level) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return def, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("field \"logLevel\": unknown level %q (want debug, info, warn or error)", s)
}

// New returns a logger and the function that closes its file. A log file
// that cannot be opened, or that breaks the rules of OpenFile, is not
// fatal: the plugin's work matters more than its log, so the logger falls
// back to Stderr (at Stderr's default level) and says why there, in one
// line.
func New(opts Options, attrs ...any) (*slog.Logger, func()) {
	stderr := opts.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	var w io.Writer = stderr
	closeFn := func() {}
	def := slog.LevelWarn
	var ferr error
	if opts.File != "" {
		f, err := OpenFile(opts.File)
		if err != nil {
			ferr = fmt.Errorf("field \"logFile\": %w; logging to stderr instead", err)
		} else {
			w, def = f, slog.LevelInfo
			closeFn = func() { _ = f.Close() } // nothing useful to do if closing a log fails
		}
	}
	level, lerr := ParseLevel(opts.Level, def)
	if lerr != nil {
		level = def
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: quoteDEL})).With(attrs...)
	for _, err := range []error{lerr, ferr} {
		if err != nil {
			slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{ReplaceAttr: quoteDEL})).With(attrs...).Warn("logging", "error", err)
		}
	}
	return log, closeFn
}

// absolute returns the cleaned path, or an error if it is not absolute (a
// relative one would be resolved against whatever directory the runtime
// started the plugin in).
func absolute(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%q is not an absolute path", path)
	}
	return filepath.Clean(path), nil
}

// quoteDEL turns a value whose text holds DEL into a byte slice, which
// slog's text handler always writes as a Go quoted string (DEL as \x7f).
// The text is the one slog would write: MarshalText, else %+v.
func quoteDEL(_ []string, a slog.Attr) slog.Attr {
	var text string
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		text = v.String()
	case slog.KindAny:
		switch x := v.Any().(type) {
		case []byte:
			return a // always quoted already
		case encoding.TextMarshaler:
			b, err := x.MarshalText()
			if err != nil {
				return a // slog reports the error itself
			}
			text = string(b)
		default:
			text = fmt.Sprintf("%+v", x)
		}
	default:
		return a
	}
	if !strings.Contains(text, "\x7f") {
		return a
	}
	return slog.Any(a.Key, []byte(text))
}
