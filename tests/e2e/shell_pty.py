"""Drives `tenant shell` through a real pseudo-terminal, as a person at a terminal would.

argv: the tenant command line. The child gets the pty as its controlling terminal at
40 rows x 100 columns and records `stty -g` before and after the tenant runs (files
named by STTY_BEFORE / STTY_AFTER). The parent types a command, resizes the window,
asks `stty size`, presses Ctrl-D and prints one JSON document: the tenant's exit status
and everything the terminal showed.
"""
import fcntl, json, os, pty, select, struct, sys, termios, time

TIMEOUT = 60


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


pid, fd = pty.fork()
if pid == 0:
    set_size(0, 40, 100)
    script = 'stty -g > "$STTY_BEFORE"; "$@"; rc=$?; stty -g > "$STTY_AFTER"; exit $rc'
    os.execvp("sh", ["sh", "-c", script, "sh"] + sys.argv[1:])

shown = b""
CURSOR_QUERY = b"\x1b[6n"


def answer_queries(chunk):
    """Answers what a terminal emulator answers: busybox's line editor asks for the
    cursor position after a resize and waits for the reply."""
    for _ in range(chunk.count(CURSOR_QUERY)):
        os.write(fd, b"\x1b[1;5R")


def read_until(needle):
    global shown
    deadline = time.time() + TIMEOUT
    while needle not in shown:
        left = deadline - time.time()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise SystemExit("no %r within %ss; the terminal showed %r" % (needle, TIMEOUT, shown))
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            raise SystemExit("the terminal closed before %r; it showed %r" % (needle, shown))
        answer_queries(chunk)
        shown += chunk


def drain_to_exit():
    global shown
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if chunk:
                answer_queries(chunk)
                shown += chunk
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
    os.kill(pid, 9)
    raise SystemExit("tenant shell did not end after Ctrl-D; the terminal showed %r" % shown)


read_until(b"ready> ")  # type once the prompt shows, as a person would
# The quotes make the typed text (echoed by the remote terminal) differ from its output.
os.write(fd, b"echo typed-''-text\r")
read_until(b"typed--text")
set_size(fd, 50, 132)  # the kernel sends SIGWINCH to the foreground process group
time.sleep(1)
os.write(fd, b"stty size\r")
read_until(b"50 132\r\nready> ")
os.write(fd, b"\x04")
status = drain_to_exit()
print(json.dumps({
    "exit": os.waitstatus_to_exitcode(status),
    "shown": shown.decode("utf-8", "replace"),
}))
