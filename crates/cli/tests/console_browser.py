"""The console in a real browser: headless Chromium (Debian's package) driven through its
WebDriver (chromium-driver) by Python selenium. Run by console_browser.rs, which starts a relay,
an agent and an MLLP device and passes them in the environment:

  CONSOLE_URL       the relay's base URL (http://127.0.0.1:PORT/)
  OPERATOR_ID/_SECRET  an operator ClientApplication
  AGENT_ID, AGENT_PID  the Agent and its `outpost agent` process
  CHANNEL_PORT      the agent's MLLP channel, for `medplum hl7 send`
  MEDPLUM_CLI, MEDPLUM_HOME  the medplum CLI and a HOME for it
  HEARTBEAT_SECS    the relay's heartbeat period
  SCREENSHOTS       where each page's screenshot goes
  OUTPOST_CHROMIUM, OUTPOST_CHROMEDRIVER  the browser and its driver

Each step waits on what the page shows (WebDriverWait), never on a fixed sleep; a step that
does not happen in time fails the run with the page's text.
"""

import os
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

env = os.environ
base = env["CONSOLE_URL"].rstrip("/")
agent = env["AGENT_ID"]
shots = env["SCREENSHOTS"]
heartbeat = float(env["HEARTBEAT_SECS"])

options = webdriver.ChromeOptions()
options.binary_location = env.get("OUTPOST_CHROMIUM", "/usr/bin/chromium")
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    options.add_argument(arg)
driver = webdriver.Chrome(
    service=Service(env.get("OUTPOST_CHROMEDRIVER", "/usr/bin/chromedriver")), options=options
)


def step(name):
    print(f"step: {name}", flush=True)


def shot(name):
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))


def wait(timeout, condition, what):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except Exception:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise SystemExit(f"FAILED: {what} within {timeout} s; the page shows:\n{body}")


def row_status():
    rows = driver.find_elements(By.ID, f"agent-{agent}")
    return rows[0].get_attribute("data-status") if rows else None


try:
    step("log in")
    driver.get(f"{base}/console")
    wait(10, EC.presence_of_element_located((By.ID, "client_id")), "the login form")
    shot("login")
    driver.find_element(By.ID, "client_id").send_keys(env["OPERATOR_ID"])
    driver.find_element(By.ID, "client_secret").send_keys(env["OPERATOR_SECRET"])
    driver.find_element(By.ID, "login").click()
    wait(10, EC.presence_of_element_located((By.ID, "fleet")), "the fleet page after login")

    step("the agent is connected")
    wait(15, lambda d: row_status() == "connected", "the agent shown connected")
    # The agent's own counts (its queue and dead letters) join the row when it is asked.
    wait(15, lambda d: "at the agent: 0 queued · no dead letters" in d.find_element(By.ID, f"agent-{agent}").text,
         "the agent's queue and dead letters in its row")
    shot("fleet")

    step("push from the agent page")
    driver.find_element(By.CSS_SELECTOR, f"#agent-{agent} a").click()
    wait(10, EC.presence_of_element_located((By.ID, "push-form")), "the agent page")
    wait(15, EC.presence_of_element_located((By.CSS_SELECTOR, "table.stats")), "the agent's stats")
    wait(15, EC.text_to_be_present_in_element((By.ID, "dead-letters"), "No dead letters."), "the agent's dead letters")
    driver.find_element(By.XPATH, "//div[@class='generate']/button[text()='ASTM order']").click()
    if not driver.find_element(By.ID, "push-body").get_attribute("value").startswith("H|\\^&"):
        raise SystemExit("FAILED: the ASTM example did not fill the box")
    if Select(driver.find_element(By.ID, "push-type")).first_selected_option.get_attribute("value") != "application/astm":
        raise SystemExit("FAILED: the ASTM example did not set the content type")
    driver.find_element(By.XPATH, "//div[@class='generate']/button[text()='HL7 ADT^A01']").click()
    Select(driver.find_element(By.ID, "push-device")).select_by_value("lab-device")
    message = driver.find_element(By.ID, "push-body").get_attribute("value")
    control_id = message.splitlines()[0].split("|")[9]
    print(f"pushed control id {control_id}", flush=True)
    driver.find_element(By.ID, "push").click()
    wait(5, EC.alert_is_present(), "the confirmation")
    driver.switch_to.alert.accept()
    wait(15, EC.text_to_be_present_in_element((By.ID, "push-status"), "HTTP 200"), "the push answered")
    hops = driver.find_element(By.ID, "push-hops").text
    if "relay" not in hops or "WebSocket and agent" not in hops or "device" not in hops:
        raise SystemExit(f"FAILED: the push's hops are not shown: {hops}")
    reply = driver.find_element(By.ID, "push-reply").text
    if "ACK" not in reply or "AA" not in reply or control_id not in reply:
        raise SystemExit(f"FAILED: the push's answer is not the device's AA: {reply}")
    shot("agent-push")

    step("an inbound message appears live")
    driver.get(f"{base}/console/messages")
    wait(10, EC.presence_of_element_located((By.ID, "messages")), "the messages page")
    before = len(driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr"))
    sent = subprocess.run(
        [env["MEDPLUM_CLI"], "hl7", "send", "127.0.0.1", env["CHANNEL_PORT"], "--generate-example"],
        env={**env, "HOME": env["MEDPLUM_HOME"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if sent.returncode != 0 or "MSA|AA" not in sent.stdout:
        raise SystemExit(f"FAILED: medplum hl7 send: {sent.returncode}\n{sent.stdout}\n{sent.stderr}")
    wait(
        10,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages tbody tr")) > before,
        "the new message in the list without a reload",
    )
    newest = driver.find_element(By.CSS_SELECTOR, "#messages tbody tr")
    if "ADT^A01" not in newest.text:
        raise SystemExit(f"FAILED: the newest row is not the ADT^A01 sent: {newest.text}")
    shot("messages")

    step("resend it")
    newest.find_element(By.TAG_NAME, "a").click()
    wait(10, EC.presence_of_element_located((By.ID, "resend")), "the message page")
    cell = driver.find_element(By.CSS_SELECTOR, "#message td[data-path='MSH-9']")
    if cell.get_attribute("title") != "MSH-9":
        raise SystemExit("FAILED: MSH-9 has no field path on hover")
    driver.find_element(By.ID, "resend").click()
    wait(5, EC.alert_is_present(), "the confirmation")
    driver.switch_to.alert.accept()
    wait(15, EC.text_to_be_present_in_element((By.ID, "resend-status"), "Sent again"), "the resend answered")
    shot("message")

    step("the push is in the push log and the charts")
    driver.get(f"{base}/console/pushes?control_id={control_id}")
    wait(10, EC.presence_of_element_located((By.CSS_SELECTOR, "#pushes tbody tr")), "the push in the push log")
    shot("pushes")
    driver.get(f"{base}/console/charts")
    wait(10, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn", "the charts drawn")
    totals = driver.find_element(By.ID, "totals").text
    if not totals.startswith("1 pushes, 1 inbound messages"):
        raise SystemExit(f"FAILED: the charts count {totals!r}, not the one push and one inbound message")
    if len(driver.find_elements(By.CSS_SELECTOR, ".uplot")) != 3:
        raise SystemExit("FAILED: not three charts")
    shot("charts")

    step("a silent agent turns red within its heartbeat window")
    driver.get(f"{base}/console")
    wait(10, lambda d: row_status() == "connected", "the agent shown connected again")
    os.kill(int(env["AGENT_PID"]), signal.SIGSTOP)
    stopped = time.monotonic()
    # The relay drops an agent silent for its agent timeout (three heartbeats and 5 s, as
    # `outpost server` sets it), noticed at its next check; the page hears within a second of
    # that. The slack is for a loaded CI machine.
    window = 3 * heartbeat + 5 + 8
    wait(window, lambda d: row_status() == "disconnected", "the agent shown disconnected")
    took = time.monotonic() - stopped
    badge = driver.find_element(By.CSS_SELECTOR, f"#agent-{agent} .badge")
    if "bad" not in badge.get_attribute("class"):
        raise SystemExit(f"FAILED: a disconnected agent's badge is not red: {badge.get_attribute('class')}")
    print(f"disconnected shown {took:.1f} s after the agent went silent", flush=True)
    shot("fleet-disconnected")
    print("OK", flush=True)
finally:
    driver.quit()
