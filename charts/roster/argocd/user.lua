-- Argo CD health of a roster.dev User: ACTIVE and delivered PENDING are Healthy, a
-- deactivated or expired (spec.expiresAt passed) user is Suspended, a stalled or locked-out one Degraded, the rest Progressing.
local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then return c end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  return {status = "Progressing", message = "waiting for roster"}
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  return {status = "Progressing", message = "roster has not seen this change yet"}
end
local ready = condition("Ready") or {}
local stalled = condition("Stalled") or {}
local phase = obj.status.phase
if obj.spec ~= nil and obj.spec.state == "Inactive" then
  return {status = "Suspended", message = ready.message or "deactivated"}
end
if phase == "INACTIVE" and ready.reason == "Expired" then
  return {status = "Suspended", message = ready.message or "expired"}
end
if stalled.status == "True" or phase == "INACTIVE" then
  return {status = "Degraded", message = ready.message or stalled.message or phase}
end
if phase == "ACTIVE" or (phase == "PENDING" and ready.status == "True") then
  return {status = "Healthy", message = ready.message or phase}
end
return {status = "Progressing", message = ready.message or phase}
