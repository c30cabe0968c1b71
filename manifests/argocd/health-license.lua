-- Argo CD health of kameng.io/License, from its life-cycle state.
local hs = {}
if obj.status == nil or obj.status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kameng operator"
  return hs
end
local state = obj.status.state
local until_ = obj.status.expiresAt or ""
if state == "Active" then
  hs.status = "Healthy"
  hs.message = "Active until " .. until_
elseif state == "ExpiringSoon" then
  hs.status = "Healthy"
  hs.message = "Expiring soon: term ends " .. until_
elseif state == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended" .. ((obj.spec and obj.spec.suspendReason and
    (": " .. obj.spec.suspendReason)) or "")
elseif state == "Grace" then
  hs.status = "Degraded"
  hs.message = "Term ended " .. until_ .. "; storefront read-only until " ..
    (obj.status.graceUntil or "?")
else
  hs.status = "Degraded"
  hs.message = state
end
return hs
