// Package logging builds the plugins' loggers from the "logFile" and
// "logLevel" configuration fields. Logs never go to stdout: that is where a
// CNI plugin prints its result.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Options select where and how much to log.
type Options struct {
	// File, if set, receives the log lines (appended; created 0600).
	// Otherwise they go to Stderr, which the runtime records.
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
// that cannot be opened is not fatal: the plugin's work matters more than
// its log, so the logger falls back to Stderr and says why there.
func New(opts Options, attrs ...any) (*slog.Logger, func()) {
	stderr := opts.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	def := slog.LevelWarn
	if opts.File != "" {
		def = slog.LevelInfo
	}
	level, lerr := ParseLevel(opts.Level, def)
	if lerr != nil {
		level = def
	}
	var w io.Writer = stderr
	closeFn := func() {}
	var ferr error
	if opts.File != "" {
		f, err := os.OpenFile(opts.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			ferr = fmt.Errorf("field \"logFile\": %w", err)
		} else {
			w = f
			closeFn = func() { _ = f.Close() } // nothing useful to do if closing a log fails
		}
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With(attrs...)
	for _, err := range []error{lerr, ferr} {
		if err != nil {
			slog.New(slog.NewTextHandler(stderr, nil)).With(attrs...).Warn("logging", "error", err)
		}
	}
	return log, closeFn
}
