# An agent for `agentwire serve --agent-url http://127.0.0.1:8000/run`: Python's standard library only.
import json, re, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Agent(BaseHTTPRequestHandler):
    def do_POST(self):
        run = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.end_headers()
        def step(**fields):  # one JSON object per line, sent at once
            self.wfile.write(json.dumps(fields).encode() + b"\n")
            self.wfile.flush()
        words = len(run["text"].split())
        step(type="thinking_delta", text=f"{len(run['messages'])} earlier turns. ")
        step(type="thinking_delta", text="Counting the words.")
        step(type="tool_call", call_id="c1", tool="word_count", args={"text": run["text"]})
        step(type="tool_result", call_id="c1", tool="word_count", ok=True, result=words)
        for token in re.findall(r"\s*\S+", f"Your message has {words} words."):
            step(type="text_delta", text=token)
            time.sleep(0.05)

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Agent)
print(f"agent on http://127.0.0.1:{server.server_port}/run", flush=True)
server.serve_forever()
